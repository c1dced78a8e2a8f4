/**
 * The OCI image-spec shapes kybernate writes and reads (image-spec v1.1): descriptors, the image manifest, the
 * image index, the image config and the layout files, with a checker for what comes back from a registry or a
 * layout: a checkpoint image from elsewhere is untrusted input.
 */
export const MEDIA_TYPE = {
  manifest: "application/vnd.oci.image.manifest.v1+json",
  index: "application/vnd.oci.image.index.v1+json",
  config: "application/vnd.oci.image.config.v1+json",
  layer: "application/vnd.oci.image.layer.v1.tar",
  layerGzip: "application/vnd.oci.image.layer.v1.tar+gzip",
  layerZstd: "application/vnd.oci.image.layer.v1.tar+zstd",
  dockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  dockerManifestList: "application/vnd.docker.distribution.manifest.list.v2+json",
} as const;

export type Compression = "none" | "gzip" | "zstd";

export const LAYER_MEDIA_TYPE: Record<Compression, string> = {
  none: MEDIA_TYPE.layer,
  gzip: MEDIA_TYPE.layerGzip,
  zstd: MEDIA_TYPE.layerZstd,
};

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: { architecture: string; os: string };
}

export interface ImageManifest {
  schemaVersion: 2;
  mediaType: typeof MEDIA_TYPE.manifest;
  config: Descriptor;
  layers: Descriptor[];
  annotations?: Record<string, string>;
}

export interface ImageIndex {
  schemaVersion: 2;
  mediaType: typeof MEDIA_TYPE.index;
  manifests: Descriptor[];
  annotations?: Record<string, string>;
}

export interface ImageConfig {
  created?: string;
  architecture: string;
  os: string;
  config?: { Labels?: Record<string, string> };
  rootfs: { type: "layers"; diff_ids: string[] };
  history?: Array<{ created?: string; created_by?: string; comment?: string }>;
}

export const OCI_LAYOUT = { imageLayoutVersion: "1.0.0" } as const;
/** The index.json annotation naming an image in a layout (image-spec annotations.md). */
export const REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name";
/** containerd's `ctr images import` takes the full name from this one. */
export const CONTAINERD_IMAGE_NAME_ANNOTATION = "io.containerd.image.name";

export const DIGEST_PATTERN = /^sha256:[a-f0-9]{64}$/;

/** The OCI architecture name of this machine (image-spec config.md uses Go's GOARCH values). */
export function ociArchitecture(arch: string = process.arch): string {
  const names: Record<string, string> = { x64: "amd64", arm64: "arm64", ppc64: "ppc64le", s390x: "s390x" };
  return names[arch] ?? arch;
}

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);

/** What is wrong with a descriptor, or undefined. Never quotes the value: it may be anything. */
function descriptorProblem(v: unknown, where: string): string | undefined {
  if (!isObject(v)) return `${where} is not a descriptor object`;
  if (typeof v.mediaType !== "string" || !v.mediaType) return `${where}.mediaType is missing`;
  if (typeof v.digest !== "string" || !DIGEST_PATTERN.test(v.digest))
    return `${where}.digest is not sha256:<64 hex digits>`;
  if (typeof v.size !== "number" || !Number.isSafeInteger(v.size) || v.size < 0)
    return `${where}.size is not a whole number of bytes`;
  if (v.annotations !== undefined && !stringMap(v.annotations))
    return `${where}.annotations is not a string map`;
  return undefined;
}

function stringMap(v: unknown): v is Record<string, string> {
  return isObject(v) && Object.values(v).every((x) => typeof x === "string");
}

/**
 * The manifest of a checkpoint image, checked: an OCI image manifest with one config of the OCI config type and
 * exactly one layer of a tar media type. Throws with what is wrong.
 */
export function checkManifest(value: unknown, mediaTypeHeader?: string): ImageManifest {
  const fail = (why: string): never => {
    throw new Error(`not an OCI checkpoint image: ${why}`);
  };
  if (!isObject(value)) return fail("its manifest is not a JSON object");
  if (value.schemaVersion !== 2) fail("its manifest's schemaVersion is not 2");
  const mediaType = (value.mediaType as string | undefined) ?? mediaTypeHeader;
  if (mediaType === MEDIA_TYPE.index || mediaType === MEDIA_TYPE.dockerManifestList)
    fail(`its reference names an image index (${mediaType}), not one image manifest`);
  if (mediaType !== MEDIA_TYPE.manifest)
    fail(
      `its manifest's media type is ${JSON.stringify(String(mediaType).slice(0, 80))}, not ${MEDIA_TYPE.manifest}`,
    );
  const problem =
    descriptorProblem(value.config, "config") ??
    (Array.isArray(value.layers) ? undefined : "layers is not a list") ??
    (value.annotations !== undefined && !stringMap(value.annotations)
      ? "annotations is not a string map"
      : undefined);
  if (problem) fail(`its manifest's ${problem}`);
  const config = value.config as unknown as Descriptor;
  if (config.mediaType !== MEDIA_TYPE.config)
    fail(
      `its config's media type is ${JSON.stringify(config.mediaType.slice(0, 80))}, not ${MEDIA_TYPE.config}`,
    );
  const layers = value.layers as unknown[];
  if (layers.length !== 1) fail(`it has ${layers.length} layers; a checkpoint image has exactly one`);
  const layerProblem = descriptorProblem(layers[0], "layers[0]");
  if (layerProblem) fail(`its manifest's ${layerProblem}`);
  const layer = layers[0] as Descriptor;
  if (!Object.values(LAYER_MEDIA_TYPE).includes(layer.mediaType))
    fail(
      `its layer's media type is ${JSON.stringify(layer.mediaType.slice(0, 80))}; a checkpoint layer is ${Object.values(LAYER_MEDIA_TYPE).join(", ")}`,
    );
  return value as unknown as ImageManifest;
}

/** The image config, checked against the manifest's single layer. Throws with what is wrong. */
export function checkConfig(value: unknown): ImageConfig {
  const fail = (why: string): never => {
    throw new Error(`not an OCI checkpoint image: its config ${why}`);
  };
  if (!isObject(value)) return fail("is not a JSON object");
  if (typeof value.architecture !== "string" || !value.architecture) fail("has no architecture");
  if (typeof value.os !== "string" || !value.os) fail("has no os");
  const rootfs = value.rootfs;
  if (!isObject(rootfs) || rootfs.type !== "layers" || !Array.isArray(rootfs.diff_ids))
    fail('has no rootfs of type "layers" with diff_ids');
  const ids = (rootfs as Json).diff_ids as unknown[];
  if (ids.length !== 1 || typeof ids[0] !== "string" || !DIGEST_PATTERN.test(ids[0]))
    fail("does not name exactly one layer diff_id (sha256:…)");
  if (value.config !== undefined) {
    if (!isObject(value.config)) fail("has a config field that is not an object");
    const labels = (value.config as Json).Labels;
    if (labels !== undefined && labels !== null && !stringMap(labels))
      fail("has Labels that are not a string map");
  }
  return value as unknown as ImageConfig;
}

// Reads an OCI image layout back and checks it against the image spec (image-layout.md, manifest.md,
// config.md, descriptor.md): every digest and size, the layer's diff_id, the media types.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import {
  checkConfig,
  checkManifest,
  type ImageConfig,
  type ImageManifest,
  MEDIA_TYPE,
} from "../../src/image/oci.js";

export const sha256 = (b: Buffer): string => `sha256:${createHash("sha256").update(b).digest("hex")}`;

/** The layer uncompressed, as a runtime unpacks it. */
export function uncompressLayer(mediaType: string, blob: Buffer): Buffer {
  if (mediaType === MEDIA_TYPE.layerGzip) return gunzipSync(blob);
  if (mediaType === MEDIA_TYPE.layerZstd)
    return execFileSync("zstd", ["-dc"], { input: blob, maxBuffer: 2 ** 30 });
  assert.equal(mediaType, MEDIA_TYPE.layer);
  return blob;
}

/** Checks the blobs of one image against its manifest; returns the uncompressed layer. */
export function checkImageBlobs(
  manifestBytes: Buffer,
  blob: (digest: string) => Buffer,
): { manifest: ImageManifest; config: ImageConfig; layer: Buffer } {
  const manifest = checkManifest(JSON.parse(manifestBytes.toString("utf8")));
  assert.equal(manifest.schemaVersion, 2);
  assert.equal(manifest.mediaType, MEDIA_TYPE.manifest);
  const configBytes = blob(manifest.config.digest);
  assert.equal(sha256(configBytes), manifest.config.digest, "config digest");
  assert.equal(configBytes.length, manifest.config.size, "config size");
  const config = checkConfig(JSON.parse(configBytes.toString("utf8")));
  assert.equal(config.os, "linux");
  assert.ok(["amd64", "arm64"].includes(config.architecture));
  const [layerDesc] = manifest.layers;
  assert.ok(layerDesc);
  const layerBlob = blob(layerDesc.digest);
  assert.equal(sha256(layerBlob), layerDesc.digest, "layer digest");
  assert.equal(layerBlob.length, layerDesc.size, "layer size");
  const layer = uncompressLayer(layerDesc.mediaType, layerBlob);
  assert.deepEqual(config.rootfs.diff_ids, [sha256(layer)], "diff_id is the uncompressed layer's digest");
  return { manifest, config, layer };
}

/** An OCI layout folder: oci-layout, index.json naming one manifest, blobs/sha256/<hex>. */
export function checkLayout(dir: string, tag: string) {
  assert.deepEqual(JSON.parse(readFileSync(join(dir, "oci-layout"), "utf8")), {
    imageLayoutVersion: "1.0.0",
  });
  const index = JSON.parse(readFileSync(join(dir, "index.json"), "utf8"));
  assert.equal(index.schemaVersion, 2);
  assert.equal(index.mediaType, MEDIA_TYPE.index);
  assert.equal(index.manifests.length, 1);
  const [entry] = index.manifests;
  assert.equal(entry.mediaType, MEDIA_TYPE.manifest);
  assert.equal(entry.annotations["org.opencontainers.image.ref.name"], tag);
  const blob = (digest: string) => readFileSync(join(dir, "blobs", "sha256", digest.slice(7)));
  const manifestBytes = blob(entry.digest);
  assert.equal(sha256(manifestBytes), entry.digest);
  assert.equal(manifestBytes.length, entry.size);
  return { entry, ...checkImageBlobs(manifestBytes, blob) };
}

import assert from "node:assert/strict";
import { test } from "node:test";
import { checkConfig, checkManifest, MEDIA_TYPE } from "../../src/image/oci.js";

const d = (mediaType: string, n = "a") => ({ mediaType, digest: `sha256:${n.repeat(64)}`, size: 10 });
const good = () => ({
  schemaVersion: 2,
  mediaType: MEDIA_TYPE.manifest,
  config: d(MEDIA_TYPE.config, "c"),
  layers: [d(MEDIA_TYPE.layer, "1")],
  annotations: { a: "b" },
});

test("an OCI manifest with one config and one tar layer passes", () => {
  assert.equal(checkManifest(good()).layers.length, 1);
  for (const t of [MEDIA_TYPE.layerGzip, MEDIA_TYPE.layerZstd])
    assert.ok(checkManifest({ ...good(), layers: [d(t)] }));
  // The media type may come from the registry's Content-Type alone.
  const { mediaType: _, ...bare } = good();
  assert.ok(checkManifest(bare, MEDIA_TYPE.manifest));
});

test("each way a manifest is not a checkpoint image's is named", () => {
  const cases: Array<[unknown, RegExp]> = [
    ["text", /manifest is not a JSON object/],
    [{ ...good(), schemaVersion: 1 }, /schemaVersion is not 2/],
    [{ ...good(), mediaType: MEDIA_TYPE.index }, /names an image index/],
    [
      { ...good(), mediaType: MEDIA_TYPE.dockerManifest },
      /media type is "application\/vnd\.docker\.distribution\.manifest\.v2\+json"/,
    ],
    [{ ...good(), config: d("application/json") }, /config's media type is "application\/json"/],
    [{ ...good(), layers: [] }, /it has 0 layers; a checkpoint image has exactly one/],
    [{ ...good(), layers: [d(MEDIA_TYPE.layer), d(MEDIA_TYPE.layer)] }, /it has 2 layers/],
    [
      { ...good(), layers: [d("application/vnd.oci.image.layer.nondistributable.v1.tar")] },
      /layer's media type is/,
    ],
    [
      { ...good(), layers: [{ ...d(MEDIA_TYPE.layer), digest: "md5:x" }] },
      /layers\[0\]\.digest is not sha256/,
    ],
    [
      { ...good(), layers: [{ ...d(MEDIA_TYPE.layer), size: -1 }] },
      /layers\[0\]\.size is not a whole number/,
    ],
    [{ ...good(), annotations: { a: 1 } }, /annotations is not a string map/],
  ];
  for (const [value, expected] of cases) assert.throws(() => checkManifest(value), expected);
});

test("the config: architecture, os and exactly one diff_id", () => {
  const config = {
    architecture: "amd64",
    os: "linux",
    rootfs: { type: "layers", diff_ids: [`sha256:${"d".repeat(64)}`] },
  };
  assert.ok(checkConfig(config));
  assert.throws(() => checkConfig({ ...config, os: "" }), /has no os/);
  assert.throws(
    () => checkConfig({ ...config, rootfs: { type: "layers", diff_ids: [] } }),
    /exactly one layer diff_id/,
  );
  assert.throws(
    () => checkConfig({ ...config, config: { Labels: { x: 2 } } }),
    /Labels that are not a string map/,
  );
});

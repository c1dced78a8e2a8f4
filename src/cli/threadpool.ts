// Imported first by the CLI: the driver backend's FFI calls run on libuv's pool, which has 4 threads by
// default and is sized when first used; 4 would cap parallel freezes and a hung driver call holds one.
process.env.UV_THREADPOOL_SIZE ??= "32";

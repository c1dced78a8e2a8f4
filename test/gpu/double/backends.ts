/** Both backends, on the double: the FFI path (koffi loading the fake libcuda.so.1) and the tool path. */
import type { GpuBackend } from "../../../src/gpu/backend.js";
import { BinaryBackend } from "../../../src/gpu/binary-backend.js";
import { DriverBackend } from "../../../src/gpu/driver-backend.js";
import { fakeLibcuda, fakeTool } from "./harness.js";

export const backends: Array<{ name: string; make: () => GpuBackend }> = [
  { name: "driver (koffi + fake libcuda.so.1)", make: () => new DriverBackend(fakeLibcuda()) },
  { name: "binary (fake cuda-checkpoint)", make: () => new BinaryBackend(fakeTool()) },
];

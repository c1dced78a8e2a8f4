export { eventMask } from "./events.js";
export type { NriHandlers } from "./handlers.js";
export { Inventory } from "./inventory.js";
export { NriStub, type StubOptions } from "./stub.js";
export * from "./types.js";

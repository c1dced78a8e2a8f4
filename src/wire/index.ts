export {
  encodeFrame,
  FRAME_HEADER_LENGTH,
  FrameDecoder,
  FrameError,
  frameMessage,
  MAX_FRAME_PAYLOAD,
  PEER_READ_BUFFER,
} from "./mux/frame.js";
export { Multiplexer, type MultiplexerOptions, MuxConnection } from "./mux/multiplexer.js";
export { type CallOptions, TtrpcClient, type TtrpcClientOptions } from "./ttrpc/client.js";
export { HEADER_LENGTH, MAX_DATA_LENGTH, type MessageHeader, MessageType } from "./ttrpc/header.js";
export {
  type CallContext,
  type MethodHandler,
  type ServedConnection,
  type ServiceHandlers,
  TtrpcServer,
  type TtrpcServerOptions,
} from "./ttrpc/server.js";
export { Code, codeName, isTtrpcError, TtrpcError } from "./ttrpc/status.js";

import type {
  ConfigureRequest,
  Container,
  ContainerAdjustment,
  LifecycleEvent,
  NriEvent,
  PodSandbox,
} from "./types.js";

/**
 * What a plugin implements; every method is optional. The stub subscribes only to the events the plugin asks
 * for (`events`), because each subscribed event is one more call made under containerd's global NRI lock.
 */
export interface NriHandlers {
  /** Events to subscribe to; CreateContainer is implied when createContainer is set. */
  readonly events: readonly NriEvent[];
  configure?(request: ConfigureRequest): void | Promise<void>;
  synchronize?(pods: PodSandbox[], containers: Container[]): void | Promise<void>;
  /**
   * Returns the adjustment for a container being created. Throwing, or answering after the stub's deadline,
   * yields an empty adjustment: an error status would fail the container's creation.
   */
  createContainer?(
    pod: PodSandbox,
    container: Container,
  ): ContainerAdjustment | undefined | Promise<ContainerAdjustment | undefined>;
  /** Every other subscribed event, whether it came as StateChange (NRI <= v0.11) or a dedicated RPC (v0.12). */
  event?(event: LifecycleEvent): void | Promise<void>;
  /** The runtime is going away (NRI Shutdown); the stub reconnects by itself. */
  shutdown?(): void | Promise<void>;
}

import type { Filesystem } from "../host/filesystems.js";
import type { PageStoreKeeper } from "./page-store-keeper.js";
import type { RateBook } from "./rates.js";

/**
 * What the daemon's stages need beyond the GPU for a checkpoint at the node's speed: the page store, the disk
 * admission, the deadline hint, and where to find what the action script stamps.
 */
export interface CheckpointExtras {
  /** This node's name, as page manifests and refusals name it. */
  node: string;
  /** The page store (`--page-store DIR`); absent: every checkpoint is self-contained, as without kybernate. */
  pages?: PageStoreKeeper;
  disk: {
    enabled: boolean;
    /** containerd's root, where its content store lives (CRI checkpoints show theirs through CRIU's work dir). */
    containerdRoot: string;
    /** Where CRI archives land (the kubelet's checkpoints dir), when it exists. */
    archiveDir?: string;
  };
  /** `--deadline-hint`: past this estimate, a checkpoint is logged with the kubelet `?timeout=` to use. */
  deadlineHintMs: number;
  rates: RateBook;
  /** The file the action script touches at CRIU's post-dump when the daemon is not asked (no page store). */
  postDumpStamp?: (containerId: string) => string;
  /** The CRIU config kybernate wrote for a container, checked before pages are linked into a restore. */
  criuConfigOf?: (containerId: string) => string;
  /** Injectable for tests; host/filesystems.ts in production. */
  filesystemOf?: (path: string) => Promise<Filesystem>;
}

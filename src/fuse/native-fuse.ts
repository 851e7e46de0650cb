/**
 * The daemon's FUSE binding (native/chainfs_fuse3.cc): libfuse3's low-level
 * API on its own threads. The tree is served from C; a read of a view is
 * served from C (spliced from the layer files, or pread for small reads, on
 * the libfuse thread) wherever the regions it touches have been published;
 * a region's first read asks JS only to publish it; a lazy directory's
 * first lookup or opendir asks JS to list it (`expand`), and JS adds its
 * entries (`addNodes`) before answering; everything else comes here as a
 * call that must be answered exactly once.
 */
import * as path from 'node:path';

/** One file or directory of the mount; its index in the list is its handle. */
export interface FuseNodeSpec {
  /** Absolute path inside the mount ("/", "/snapshots/s1.img"). */
  path: string;
  /** Index of the parent directory, -1 for the root. */
  parent: number;
  dir: boolean;
  /** A directory whose entries are listed on first use (`expand`, then `addNodes`). */
  lazy?: boolean;
  /** A view: reads may be served from published runs. */
  view: boolean;
  /**
   * A file (size -1) whose size is asked only once it was opened: stat shows
   * 0 until then, and it is served direct_io (catalog.json of a lazy source,
   * which opening lists in full).
   */
  direct?: boolean;
  mode: number;
  /** -1: asked on first use (`size` handler). */
  size: number;
  /** st_blocks (512-byte units). */
  blocks: number;
  mtimeMs: number;
  ctimeMs: number;
}

export interface FuseConfig {
  /** Byte budget of the published runs (past it they are dropped and re-published on demand). */
  budget: number;
  /** Region size of the published runs (the chain's resolution unit). */
  region: number;
  /** statfs f_blocks (4 KiB). */
  statfsBlocks: number;
  /** Bytes of a sequentially read view announced to its layer files ahead of the reader (0: none). */
  readAhead?: number;
}

export interface FuseHandlers {
  /** A file is opened: 0, or a negative errno (possibly after a wait: a remote view's metadata). */
  open(node: number): number | Promise<number>;
  /** Read `len` bytes at `pos`: answer once with the byte count and the bytes, or a negative errno. */
  read(node: number, pos: number, len: number, answer: (n: number, bytes?: Buffer) => void): void;
  /**
   * Resolve and publish the regions [pos, pos+len) touches: 1 if C can now
   * read all of it, 0 if it must ask `read`. Also called, without waiting
   * for the answer, for a region ahead of a sequential reader.
   */
  resolve(node: number, pos: number, len: number): number;
  /** The size of a node given as -1. */
  size(node: number): number;
  /**
   * List the lazy directory `node`: add its entries (`addNodes`) and answer
   * 0, or a negative errno (the next access asks again). Concurrent calls
   * for one directory must list it once.
   */
  expand(node: number): Promise<number>;
  /** The FUSE loop ended (unmounted, by us or not). */
  exit(): void;
}

export interface FuseStats {
  /** Reads served in C from published runs. */
  fastReads: number;
  /** Reads spliced from the layer files' page cache (two pages or more). */
  splicedReads: number;
  /** Reads that came to JS. */
  slowReads: number;
  /** Of the reads that came to JS, those JS only resolved, the bytes read in C. */
  resolvedReads: number;
  publishedBytes: number;
  /** How often the published runs went over budget and were dropped. */
  flushes: number;
}

declare const handleBrand: unique symbol;
type Handle = { readonly [handleBrand]: true };
type Call = { readonly [handleBrand]: 'call' };

interface Binding {
  mount(mountPoint: string, options: string, nodes: FuseNodeSpec[], config: FuseConfig,
    handler: (op: number, node: number, pos: number, len: number, call: Call | undefined) => void): Handle;
  reply(call: Call, result: number, bytes?: Buffer): void;
  publish(h: Handle, node: number, regionStart: number, runs: Float64Array): void;
  addNodes(h: Handle, dir: number, nodes: FuseNodeSpec[]): void;
  stale(h: Handle, node: number): void;
  detach(h: Handle): void;
  unmount(h: Handle): number;
  stats(h: Handle): FuseStats;
}

const OP_OPEN = 0;
const OP_READ = 1;
const OP_SIZE = 2;
const OP_EXIT = 3;
const OP_RESOLVE = 4;
const OP_AHEAD = 5;
const OP_EXPAND = 6;
const EIO = -5;

/** A published run's fd for zeros, and for runs only JS can read. */
export const RUN_ZERO = -1;
export const RUN_SLOW = -2;

// Loaded from the build tree both when running from dist/ and from src/ (vitest).
const binding: Binding = require(path.join(__dirname, '..', '..', 'native', 'build', 'Release', 'chainfs_fuse3.node'));

export class NativeFuse {
  private readonly handle: Handle;

  private constructor(handle: Handle) {
    this.handle = handle;
  }

  /**
   * Mounts (`options` as for `-o`) and starts serving; throws with libfuse's
   * own one-line reason when the mount fails.
   */
  static mount(mountPoint: string, options: string, nodes: FuseNodeSpec[], config: FuseConfig,
    handlers: FuseHandlers): NativeFuse {
    const handler = (op: number, node: number, pos: number, len: number, call: Call | undefined) => {
      if (op === OP_AHEAD) { // publish a region ahead of a sequential reader; nobody waits
        try {
          handlers.resolve(node, pos, len);
        } catch {
          // the reader will ask again when it gets there
        }
        return;
      }
      if (op === OP_EXIT || !call) {
        handlers.exit();
        return;
      }
      let answered = false;
      const answer = (n: number, bytes?: Buffer) => {
        if (answered) return;
        answered = true;
        binding.reply(call, n, bytes);
      };
      try {
        if (op === OP_OPEN) {
          const r = handlers.open(node);
          if (typeof r === 'number') answer(r);
          else r.then(answer, () => answer(EIO));
        }
        else if (op === OP_SIZE) answer(handlers.size(node));
        else if (op === OP_EXPAND) handlers.expand(node).then(answer, () => answer(EIO));
        else if (op === OP_READ) handlers.read(node, pos, len, answer);
        else if (op === OP_RESOLVE) answer(handlers.resolve(node, pos, len));
        else answer(EIO);
      } catch {
        answer(EIO); // a bug in a handler must not leave a libfuse thread waiting forever
      }
    };
    return new NativeFuse(binding.mount(mountPoint, options, nodes, config, handler));
  }

  /**
   * Publishes a region's runs, five numbers each: view offset, length, fd
   * (or RUN_ZERO / RUN_SLOW), delta (file position = view offset + delta),
   * file end (zeros at or past it).
   */
  publish(node: number, regionStart: number, runs: Float64Array): void {
    binding.publish(this.handle, node, regionStart, runs);
  }

  /**
   * The entries of the lazy directory `dir`, numbered from the current node
   * count on (parents: `dir` or an earlier one of them). Throws on a bad
   * spec (a bug); readers see them all at once.
   */
  addNodes(dir: number, nodes: FuseNodeSpec[]): void {
    binding.addNodes(this.handle, dir, nodes);
  }

  /** The view's reads fail with EIO from now on. */
  stale(node: number): void {
    binding.stale(this.handle, node);
  }

  /** Stop reading layer files from C (they are about to be closed); waits for reads in flight. */
  detach(): void {
    binding.detach(this.handle);
  }

  /** A lazy unmount by the daemon itself: 0, or a negative errno (not root: use fusermount3). */
  unmount(): number {
    return binding.unmount(this.handle);
  }

  stats(): FuseStats {
    return binding.stats(this.handle);
  }
}

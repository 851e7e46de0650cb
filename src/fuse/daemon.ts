/**
 * The mount daemon: a read-only FUSE file system over a replica's views.
 *
 * Hot reads are served synchronously from the page cache (preadv2
 * RWF_NOWAIT into the buffer FUSE hands us); a read that would block on the
 * disk goes to the libuv thread pool instead, so one cold reader never
 * stalls the others. Snapshot files are immutable; the files of every open
 * view are watched (size and mtime, once a second and at every open), and a
 * view whose files changed fails its reads with EIO, logged once, rather than
 * serve torn data.
 */
import Fuse = require('fuse-native');
import type { LayerSet } from '../chain/view';
import { mountAt } from './mountpoint';
import type { Log } from './log';
import { buildTree, lookup, type FileNode, type Node, type Tree } from './tree';

const EROFS = -30;
const EIO = -5;
const ENOENT = -2;
const EBADF = -9;
const EISDIR = -21;
const ENOTDIR = -20;
const O_ACCMODE = 3;
const O_TRUNC = 0o1000;
/** libfuse2 never sends more than 128 KiB per read. */
const MAX_READ = 128 * 1024;
const WATCH_MS = 1000;

export interface DaemonOptions {
  cacheBytes: number;
  allowOther: boolean;
  debug: boolean;
  log: Log;
}

/** fuse-native without the options it does not expose: `ro` for the whole mount. */
class ReadOnlyFuse extends Fuse {
  protected override _fuseOptions(): string {
    const base = super._fuseOptions();
    return base ? `${base},ro` : '-oro';
  }
}

export class MountDaemon {
  readonly mountPoint: string;
  private readonly layers: LayerSet;
  private readonly opts: DaemonOptions;
  private readonly tree: Tree;
  private readonly handles: (FileNode | undefined)[] = [];
  private readonly freeHandles: number[] = [];
  private fuse: ReadOnlyFuse | undefined;
  private watch: NodeJS.Timeout | undefined;
  private mountId = -1;
  private readonly uid = process.getuid?.() ?? 0;
  private readonly gid = process.getgid?.() ?? 0;
  /** Called when the file system went away without us (fusermount -u, umount -l). */
  onExternalUnmount: () => void = () => undefined;

  constructor(layers: LayerSet, mountPoint: string, opts: DaemonOptions) {
    this.layers = layers;
    this.mountPoint = mountPoint;
    this.opts = opts;
    // Without --allow-other only the mounting user sees the files (FUSE's
    // default), so modes can be generous; with it, default_permissions
    // applies and the modes follow the replica's own files.
    this.tree = buildTree(layers, {
      cacheBytes: opts.cacheBytes,
      fileMode: (d) => (opts.allowOther ? (d?.stat?.mode ?? 0o444) & 0o444 : 0o444),
    });
  }

  async mount(): Promise<void> {
    const fuse = new ReadOnlyFuse(this.mountPoint, this.ops(), {
      timeout: false, // fuse-native would arm a timer per request
      maxRead: MAX_READ,
      autoCache: true, // keep the page cache across opens unless size/mtime changed
      allowOther: this.opts.allowOther,
      defaultPermissions: this.opts.allowOther,
      fsname: `chainfs:${this.layers.replica.dir.replace(/[,\\]/g, '_')}`.slice(0, 200),
      subtype: 'chainfs',
      debug: this.opts.debug,
    });
    await new Promise<void>((resolve, reject) => fuse.mount((err) => (err ? reject(err) : resolve())));
    this.fuse = fuse;
    this.mountId = mountAt(this.mountPoint)?.id ?? -1;
    this.watch = setInterval(() => this.check(), WATCH_MS);
  }

  async unmount(): Promise<void> {
    if (this.watch) clearInterval(this.watch);
    this.watch = undefined;
    const fuse = this.fuse;
    this.fuse = undefined;
    if (fuse) await new Promise<void>((resolve) => fuse.unmount(() => resolve()));
  }

  /**
   * The periodic watch: is our mount still there (read from mountinfo: a
   * synchronous stat of our own mount point would deadlock this process),
   * and are the files of every open view unchanged?
   */
  private check(): void {
    if (mountAt(this.mountPoint)?.id !== this.mountId) {
      this.opts.log.info(`${this.mountPoint} was unmounted; exiting`);
      this.onExternalUnmount();
      return;
    }
    // Views share layer files: stat each file once per tick, not once per view
    // (250 open snapshot views of a 250-layer chain would be 62,500 fstat).
    const seen = new Map<string, string | undefined>();
    for (const v of this.tree.views) this.checkView(v, seen);
  }

  /** Marks a view stale if one of its layer files changed since we opened it. */
  private checkView(v: Tree['views'][number], seen = new Map<string, string | undefined>()): void {
    const opened = v.view.opened;
    if (!opened || v.view.stale) return;
    for (const d of opened.disks) {
      if (!seen.has(d.file)) seen.set(d.file, this.layers.disk(d).changed());
      const why = seen.get(d.file);
      if (why) {
        v.view.stale = `${d.file} ${why} while mounted (is the replica in use?)`;
        opened.chain.invalidate();
        this.opts.log.error(`${v.view.label}: ${v.view.stale}; its reads now fail with EIO: unmount, stop the writer, and mount again`);
        return;
      }
    }
  }

  private stat(node: Node): Record<string, unknown> {
    if (node.kind === 'dir') {
      return { mode: node.mode, size: 4096, nlink: 2, uid: this.uid, gid: this.gid, mtime: node.mtime, atime: node.mtime, ctime: node.mtime };
    }
    return {
      mode: node.mode, size: node.size, nlink: 1, uid: this.uid, gid: this.gid, blksize: 4096,
      blocks: Math.ceil(node.allocated / 512), mtime: node.mtime, atime: node.mtime, ctime: node.ctime,
    };
  }

  private ops(): Record<string, (...args: any[]) => void> {
    const refuse = (...args: any[]) => (args[args.length - 1] as (e: number) => void)(EROFS);
    return {
      getattr: (p: string, cb: (e: number, st?: unknown) => void) => {
        const n = lookup(this.tree.root, p);
        if (!n) return cb(ENOENT);
        cb(0, this.stat(n));
      },
      readdir: (p: string, cb: (e: number, names?: string[]) => void) => {
        const n = lookup(this.tree.root, p);
        if (!n) return cb(ENOENT);
        if (n.kind !== 'dir') return cb(ENOTDIR);
        cb(0, [...n.entries.keys()]);
      },
      open: (p: string, flags: number, cb: (e: number, fh?: number) => void) => {
        const n = lookup(this.tree.root, p);
        if (!n) return cb(ENOENT);
        if (n.kind === 'dir') return cb(EISDIR);
        if ((flags & O_ACCMODE) !== 0 || (flags & O_TRUNC)) return cb(EROFS);
        if (n.view) {
          try {
            void n.view.chain; // open the view now: errors belong to open, not to read
            const v = this.tree.views.find((x) => x.node === n);
            if (v) this.checkView(v);
          } catch (e) {
            this.opts.log.error(`${p}: cannot open view: ${(e as Error).message}`);
            return cb(EIO);
          }
          if (n.view.stale) {
            this.opts.log.error(`${p}: refused: ${n.view.stale}`);
            return cb(EIO);
          }
        }
        const fh = this.freeHandles.pop() ?? this.handles.length;
        this.handles[fh] = n;
        cb(0, fh);
      },
      release: (_p: string, fh: number, cb: (e: number) => void) => {
        if (this.handles[fh]) {
          this.handles[fh] = undefined;
          this.freeHandles.push(fh);
        }
        cb(0);
      },
      read: (_p: string, fh: number, buf: Buffer, len: number, pos: number, cb: (n: number) => void) => {
        const node = this.handles[fh];
        if (!node) return cb(EBADF);
        if (pos >= node.size) return cb(0);
        const n = Math.min(len, node.size - pos);
        if (node.content) {
          node.content.copy(buf, 0, pos, pos + n);
          return cb(n);
        }
        const view = node.view!;
        if (view.stale) return cb(EIO);
        try {
          if (view.chain.readNoWait(buf, 0, n, pos)) return cb(n);
        } catch (e) {
          this.readError(view.label, pos, n, e);
          return cb(EIO);
        }
        view.chain.readAsync(buf, 0, n, pos).then(() => cb(n), (e) => {
          this.readError(view.label, pos, n, e);
          cb(EIO);
        });
      },
      statfs: (_p: string, cb: (e: number, st?: unknown) => void) => {
        const blocks = this.tree.views.reduce((a, v) => a + Math.ceil(v.node.size / 4096), 0);
        cb(0, { bsize: 4096, frsize: 4096, blocks, bfree: 0, bavail: 0, files: this.tree.views.length + 3, ffree: 0, favail: 0, fsid: 0, flag: 1, namemax: 255 });
      },
      access: (p: string, mode: number, cb: (e: number) => void) => {
        if (!lookup(this.tree.root, p)) return cb(ENOENT);
        cb(mode & 2 ? EROFS : 0);
      },
      write: refuse, truncate: refuse, ftruncate: refuse, create: refuse, unlink: refuse, mkdir: refuse,
      rmdir: refuse, rename: refuse, link: refuse, symlink: refuse, chmod: refuse, chown: refuse,
      utimens: refuse, setxattr: refuse, removexattr: refuse, mknod: refuse,
    };
  }

  private readError(label: string, pos: number, len: number, e: unknown): void {
    this.opts.log.error(`${label}: read of ${len} bytes at ${pos} failed: ${(e as Error).message}`);
  }
}

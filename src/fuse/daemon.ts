/**
 * The mount daemon: a read-only FUSE file system over a replica's views.
 *
 * libfuse3 runs on its own threads (native/chainfs_fuse3.cc): the tree is
 * served from C, and so is every read whose regions have been published
 * here: a region's resolved runs as plain file layers (fd, size at open) or
 * zeros, spliced (or, for small reads, read with pread) on the libfuse
 * thread that got the request, so readers run in parallel and a cold one
 * stalls only its own thread. The first read of a region asks only for its
 * runs to be published (and a sequential reader gets the next region
 * published before it gets there); qcow2 compressed and broken runs, failed
 * or short reads and chain.json come here for the bytes: served from the
 * page cache (RWF_NOWAIT) or on the libuv pool. Snapshot files are immutable;
 * the files of every open view are watched (size and mtime, once a second
 * and at every open), and a view whose files changed fails its reads with
 * EIO, logged once, rather than serve torn data.
 *
 * A lazy directory of the catalog (a backup target's
 * `volumes/<volume>/backups/`) is listed on its first lookup or opendir:
 * the binding asks `expand`, which lists it once (concurrent asks share the
 * listing), adds its nodes to the binding and answers; a failed listing
 * answers EIO, is logged with the reason, and is tried again next time.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { REGION_SIZE, type Chain } from '../chain/chain';
import type { Catalog } from '../source/catalog';
import { mountAt } from './mountpoint';
import type { Log } from './log';
import { NativeFuse, RUN_SLOW, RUN_ZERO, type FuseNodeSpec } from './native-fuse';
import { buildTree, expandDir, type DirNode, type FileNode, type Node, type Tree } from './tree';
import type { Layer } from '../layer/layer';

const EIO = -5;
const WATCH_MS = 1000;
/**
 * How far ahead of a sequential reader its layer files are asked to read
 * (POSIX_FADV_WILLNEED): 32 MiB took a cold `dd` of a 1 GiB view from 1.0 s
 * to 0.7 s here (64 MiB: no better). What it costs: a reader that stops
 * early has had up to 32 MiB read for nothing.
 */
const READ_AHEAD = 32 << 20;
/**
 * The kernel's readahead window for the mount, KiB (its default is 128):
 * 1 MiB lets the kernel send requests of max_read (1008 KiB) rather than
 * 128 KiB ones, an eighth of the per-request work. Only root may set it.
 */
const BDI_READ_AHEAD_KB = 1024;
/** How long an unmount waits for the FUSE loop to end (files still open on a lazily detached mount keep it alive). */
const EXIT_WAIT_MS = 2000;

export interface DaemonOptions {
  cacheBytes: number;
  allowOther: boolean;
  debug: boolean;
  log: Log;
}

export class MountDaemon {
  readonly mountPoint: string;
  private readonly catalog: Catalog;
  private readonly opts: DaemonOptions;
  private readonly tree: Tree;
  /** Every node of the tree; its index is its handle in the binding. */
  private readonly nodes: Node[] = [];
  private readonly specs: FuseNodeSpec[] = [];
  private fuse: NativeFuse | undefined;
  private watch: NodeJS.Timeout | undefined;
  private mountId = -1;
  private exited = false;
  private closing = false;
  private goneSaid = false;
  private onExit: () => void = () => undefined;
  /** Listings of lazy directories in flight, by node. */
  private readonly expanding = new Map<number, Promise<number>>();
  /** The catalog's warnings logged so far (the mount command logged those it had at mount). */
  private readonly told: Set<string>;
  /** Called when the file system went away without us (fusermount -u, umount -l). */
  onExternalUnmount: () => void = () => undefined;

  constructor(catalog: Catalog, mountPoint: string, opts: DaemonOptions) {
    this.catalog = catalog;
    this.mountPoint = mountPoint;
    this.opts = opts;
    // Without --allow-other only the mounting user sees the files (FUSE's
    // default), so modes can be generous; with it, default_permissions
    // applies and the modes follow the source's own files.
    this.told = new Set(catalog.warnings);
    this.tree = buildTree(catalog, { cacheBytes: opts.cacheBytes, sourceModes: opts.allowOther });
    this.add('/', this.tree.root, -1);
  }

  /** Numbers the tree depth first: index = handle, for the binding. */
  private add(p: string, node: Node, parent: number): void {
    const idx = this.nodes.length;
    this.nodes.push(node);
    if (node.kind === 'dir') {
      const ms = node.mtime.getTime();
      this.specs.push({ path: p, parent, dir: true, lazy: !!node.lazy, view: false, mode: node.mode, size: 4096, blocks: 0, mtimeMs: ms, ctimeMs: ms });
      for (const [name, child] of node.entries) this.add(p === '/' ? `/${name}` : `${p}/${name}`, child, idx);
    } else {
      const lazy = !node.view; // chain.json: its size is known once it is built
      this.specs.push({
        path: p, parent, dir: false, view: !!node.view, direct: !!node.prepare, mode: node.mode, size: lazy ? -1 : node.size,
        blocks: lazy ? 0 : Math.ceil(node.allocated / 512), mtimeMs: node.mtime.getTime(), ctimeMs: node.ctime.getTime(),
      });
    }
  }

  async mount(): Promise<void> {
    // max_read (1 MiB) is the binding's, and so is keeping the page cache across opens (keep_cache).
    const options = ['ro', `fsname=chainfs:${this.catalog.label.replace(/[,\\]/g, '_')}`.slice(0, 200), 'subtype=chainfs'];
    if (this.opts.allowOther) options.push('allow_other', 'default_permissions');
    if (this.opts.debug) options.push('debug');
    const statfsBlocks = this.tree.views.reduce((a, v) => a + Math.ceil(v.node.size / 4096), 0);
    this.fuse = NativeFuse.mount(this.mountPoint, options.join(','), this.specs, {
      budget: Math.max(this.opts.cacheBytes, 1 << 20), region: REGION_SIZE, statfsBlocks,
      readAhead: READ_AHEAD,
    }, {
      open: (i) => this.open(i),
      read: (i, pos, len, answer) => this.read(i, pos, len, answer),
      resolve: (i, pos, len) => this.resolve(i, pos, len),
      size: (i) => (this.nodes[i] as FileNode).size,
      expand: (i) => this.expand(i),
      exit: () => {
        this.exited = true;
        this.onExit();
        this.gone();
      },
    });
    this.mountId = mountAt(this.mountPoint)?.id ?? -1;
    this.widenReadahead();
    this.watch = setInterval(() => this.check(), WATCH_MS);
  }

  /** Sets the mount's readahead window (BDI_READ_AHEAD_KB) when we may: root. */
  private widenReadahead(): void {
    try {
      const dev = fs.statSync(this.mountPoint).dev; // the root's attributes come from C: no wait on this thread
      const bdi = `${Math.floor(dev / 256) & 0xfff}:${(dev & 0xff) | (Math.floor(dev / 4096) & 0xfff00)}`;
      fs.writeFileSync(`/sys/class/bdi/${bdi}/read_ahead_kb`, String(BDI_READ_AHEAD_KB));
    } catch {
      // not root (or no sysfs): the kernel's 128 KiB window, 128 KiB requests
    }
  }

  /** Unmounts (lazily: open files keep the detached mount until closed, at most EXIT_WAIT_MS). */
  async unmount(): Promise<void> {
    if (this.watch) clearInterval(this.watch);
    this.watch = undefined;
    const fuse = this.fuse;
    if (!fuse || this.closing) return;
    this.closing = true;
    if (!this.exited && mountAt(this.mountPoint)?.id === this.mountId) {
      const exited = new Promise<void>((resolve) => {
        this.onExit = resolve;
      });
      // Root unmounts in-process (umount2, MNT_DETACH): starting fusermount3
      // costs tens of milliseconds on a loaded machine, and without open files
      // the FUSE loop ends as soon as the mount is gone.
      if (fuse.unmount() !== 0) {
        await new Promise<void>((resolve) => {
          const p = spawn('fusermount', ['-uz', this.mountPoint], { stdio: 'ignore' });
          p.on('error', () => resolve());
          p.on('exit', () => resolve());
        });
      }
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([exited, new Promise<void>((resolve) => {
        timer = setTimeout(resolve, EXIT_WAIT_MS);
      })]);
      clearTimeout(timer);
    }
    fuse.detach(); // no more preads from C: the layer files are about to be closed
    const st = fuse.stats();
    this.opts.log.info(`reads: ${st.fastReads} served in C from published runs, ${st.slowReads} through JS; ` +
      `${st.resolvedReads} of these read in C once resolved, ${st.splicedReads} spliced; ` +
      `published runs ${Math.ceil(st.publishedBytes / 1024)} KiB, dropped ${st.flushes} times over budget`);
  }

  /**
   * The periodic watch: is our mount still there (read from mountinfo: a
   * synchronous stat of our own mount point could wait on this process),
   * and are the files of every open view unchanged?
   */
  private check(): void {
    if (mountAt(this.mountPoint)?.id !== this.mountId) {
      this.gone(); // the loop may live on while files of the detached mount are open: do not wait for it
      return;
    }
    // Views share layer files: stat each file once per tick, not once per view
    // (250 open snapshot views of a 250-layer chain would be 62,500 fstat).
    const seen = new Map<Layer, string | undefined>();
    for (const v of this.tree.views) this.checkView(v, seen);
  }

  /** The file system went away without us (once). */
  private gone(): void {
    if (this.closing || this.goneSaid) return;
    this.goneSaid = true;
    this.opts.log.info(`${this.mountPoint} was unmounted; exiting`);
    this.onExternalUnmount();
  }

  /** Marks a view stale if one of its layer files changed since we opened it. */
  private checkView(v: Tree['views'][number], seen = new Map<Layer, string | undefined>()): void {
    const opened = v.view.opened;
    if (!opened || v.view.stale) return;
    for (const l of opened.chain.layers) {
      if (!l.changed) continue;
      if (!seen.has(l)) seen.set(l, l.changed());
      const why = seen.get(l);
      if (why) {
        v.view.stale = `${l.name} ${why} while mounted (is the source in use?)`;
        this.fuse?.stale(this.nodes.indexOf(v.node));
        opened.chain.invalidate();
        this.opts.log.error(`${v.view.label}: ${v.view.stale}; its reads now fail with EIO: unmount, stop the writer, and mount again`);
        return;
      }
    }
  }

  /** Lists the lazy directory node `i` once (see the class comment): 0 or a negative errno. */
  private expand(i: number): Promise<number> {
    const dir = this.nodes[i] as DirNode;
    if (!dir.lazy) return Promise.resolve(0); // listed meanwhile (the binding asked before it saw it)
    let p = this.expanding.get(i);
    if (!p) {
      p = this.list(i, dir).finally(() => this.expanding.delete(i));
      this.expanding.set(i, p);
    }
    return p;
  }

  private async list(i: number, dir: DirNode): Promise<number> {
    const where = this.specs[i].path.slice(1);
    let views;
    try {
      views = await this.catalog.expand!(where);
    } catch (e) {
      this.opts.log.error(`${where}: cannot list: ${(e as Error).message}; answered EIO (listed again on the next access)`);
      return EIO;
    }
    if (!dir.lazy) return 0;
    for (const v of views) if (v.problem) this.opts.log.info(`warning: ${v.path} is not served: ${v.problem}`);
    for (const w of this.catalog.warnings) {
      if (this.told.has(w)) continue;
      this.told.add(w);
      this.opts.log.info(`warning: ${w}`);
    }
    const entries = expandDir(this.tree, where, views, { cacheBytes: this.opts.cacheBytes, sourceModes: this.opts.allowOther });
    const first = this.nodes.length;
    for (const [name, child] of entries) this.add(`${this.specs[i].path}/${name}`, child, i);
    try {
      this.fuse!.addNodes(i, this.specs.slice(first));
    } catch (e) {
      this.nodes.length = first; // a bug: nothing was added on either side
      this.specs.length = first;
      this.opts.log.error(`${where}: cannot add its entries: ${(e as Error).message}`);
      return EIO;
    }
    dir.entries = entries;
    dir.lazy = false;
    this.opts.log.debug(`${where}: listed ${entries.size} entries`);
    return 0;
  }

  private async open(i: number): Promise<number> {
    const n = this.nodes[i] as FileNode;
    if (n.prepare) {
      try {
        await n.prepare();
      } catch (e) {
        this.opts.log.error(`${this.specs[i].path}: cannot be built: ${(e as Error).message}; answered EIO (tried again on the next open)`);
        return EIO;
      }
      return 0;
    }
    if (!n.view) return 0;
    const label = this.specs[i].path;
    try {
      await n.view.open(); // open the view now: errors belong to open, not to read
      const v = this.tree.views.find((x) => x.node === n);
      if (v) this.checkView(v);
    } catch (e) {
      this.opts.log.error(`${label}: cannot open view: ${(e as Error).message}`);
      return EIO;
    }
    if (n.view.stale) {
      this.opts.log.error(`${label}: refused: ${n.view.stale}`);
      return EIO;
    }
    return 0;
  }

  /** A read C could not serve: the first of a region, a qcow2 or broken run, an error, chain.json. */
  private read(i: number, pos: number, len: number, answer: (n: number, bytes?: Buffer) => void): void {
    const node = this.nodes[i] as FileNode;
    if (pos >= node.size) return answer(0);
    const n = Math.min(len, node.size - pos);
    if (node.content) return answer(n, node.content.subarray(pos, pos + n));
    const view = node.view!;
    if (view.stale) return answer(EIO);
    const buf = Buffer.allocUnsafe(n);
    // Publish before answering, so that the reader's next request finds the
    // runs; a failure to publish (a bug) must not keep the answer back.
    const done = () => {
      try {
        this.publish(i, view.chain, pos, n);
      } catch (e) {
        this.opts.log.error(`${view.label}: cannot publish the runs at ${pos}: ${(e as Error).message}`);
      }
      answer(n, buf);
    };
    try {
      if (view.chain.readNoWait(buf, 0, n, pos)) return done();
    } catch (e) {
      this.readError(view.label, pos, n, e);
      return answer(EIO);
    }
    view.chain.readAsync(buf, 0, n, pos).then(done, (e) => {
      this.readError(view.label, pos, n, e);
      answer(EIO);
    });
  }

  /** The first read of a region: publish its runs, and C reads the bytes itself if they are all plain (1). */
  private resolve(i: number, pos: number, len: number): number {
    const view = (this.nodes[i] as FileNode).view;
    if (!view || view.stale) return 0;
    try {
      return this.publish(i, view.chain, pos, len) ? 1 : 0;
    } catch (e) {
      this.opts.log.error(`${view.label}: cannot publish the runs at ${pos}: ${(e as Error).message}`);
      return 0;
    }
  }

  /**
   * Hands the resolved runs of the regions [pos, pos+len) touches to C, so
   * the next reads there never come to JS: what the layers' mapDirect says
   * (file pieces by fd, offset delta and file end), zeros, and RUN_SLOW for
   * what only JS can read (compressed clusters, broken ranges). A region
   * with nothing C can read is not published. True if every run published
   * is one C can read.
   */
  private publish(i: number, chain: Chain, pos: number, len: number): boolean {
    if (!this.fuse) return false;
    let plain = true;
    for (let start = pos - (pos % REGION_SIZE); start < pos + len; start += REGION_SIZE) {
      const out: number[] = [];
      let direct = 0;
      const push = (offset: number, length: number, fd: number, delta: number, fileEnd: number) => {
        if (fd !== RUN_SLOW) direct++;
        out.push(offset, length, fd, delta, fileEnd);
      };
      // mapDirect's fd -1 is "only read() can": RUN_SLOW here.
      const piece = (offset: number, length: number, fd: number, delta: number, fileEnd: number) =>
        push(offset, length, fd >= 0 ? fd : RUN_SLOW, delta, fileEnd);
      for (const r of chain.resolvedRegion(start)) {
        if (r.layer === null) push(r.offset, r.length, RUN_ZERO, 0, 0);
        else if (!r.layer.mapDirect) push(r.offset, r.length, RUN_SLOW, 0, 0);
        else {
          const at = out.length;
          try {
            r.layer.mapDirect(r.offset, r.length, piece);
          } catch {
            out.length = at; // a corrupt mapping: JS reads (and reports) it
            push(r.offset, r.length, RUN_SLOW, 0, 0);
          }
        }
      }
      if (direct > 0) this.fuse.publish(i, start, Float64Array.from(out));
      if (direct * 5 !== out.length) plain = false;
    }
    return plain;
  }

  private readError(label: string, pos: number, len: number, e: unknown): void {
    this.opts.log.error(`${label}: read of ${len} bytes at ${pos} failed: ${(e as Error).message}`);
  }
}

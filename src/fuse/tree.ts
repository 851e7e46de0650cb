/**
 * What the mount shows: a tiny read-only tree built once at mount time from
 * metadata only.
 *
 *   /volume.img            the head view (volume.meta Size)
 *   /snapshots/NAME.img    every snapshot's point-in-time view
 *   /chain.json            `chainfs inspect --json`
 *
 * Views are opened lazily: a 250-snapshot replica mounts without opening 250
 * chains; each view's Chain (and its resolution cache) is made on first open.
 */
import * as fs from 'node:fs';
import type { Chain } from '../chain/chain';
import { replicaReport } from '../chain/report';
import type { LayerSet, View } from '../chain/view';
import type { Disk } from '../source/replica/replica';

export interface FileNode {
  kind: 'file';
  size: number;
  mode: number;
  mtime: Date;
  ctime: Date;
  /** Allocated bytes shown as st_blocks*512: an upper bound until counted. */
  allocated: number;
  /** Static content (chain.json), or a view opened on demand. */
  content?: Buffer;
  view?: LazyView;
}

export interface DirNode {
  kind: 'dir';
  mode: number;
  mtime: Date;
  entries: Map<string, Node>;
}

export type Node = FileNode | DirNode;

/** A view opened on first use; `stale` is set when one of its files changes on disk. */
export class LazyView {
  readonly label: string;
  private readonly open: () => View;
  private view: View | undefined;
  stale: string | undefined;

  constructor(label: string, open: () => View) {
    this.label = label;
    this.open = open;
  }

  get chain(): Chain {
    this.view ??= this.open();
    return this.view.chain;
  }

  get opened(): View | undefined {
    return this.view;
  }
}

export interface Tree {
  root: DirNode;
  /** Every view, for the staleness watch. */
  views: { node: FileNode; view: LazyView; disks: Disk[] }[];
}

export interface TreeOptions {
  cacheBytes: number;
  /** File mode bits for images (the replica's own files' modes with --allow-other). */
  fileMode: (d: Disk | undefined) => number;
}

export function buildTree(layers: LayerSet, opts: TreeOptions): Tree {
  const replica = layers.replica;
  const now = new Date();
  const dirStat = fs.statSync(replica.dir);
  const root: DirNode = { kind: 'dir', mode: 0o40555, mtime: dirStat.mtime, entries: new Map() };
  const snaps: DirNode = { kind: 'dir', mode: 0o40555, mtime: dirStat.mtime, entries: new Map() };
  const tree: Tree = { root, views: [] };

  const addView = (dir: DirNode, name: string, snapshot: string | undefined, root: Disk) => {
    let disks: Disk[];
    try {
      disks = replica.chain(root.file);
    } catch {
      return; // an unusable snapshot (listed with its problem in chain.json)
    }
    const size = root.kind === 'head' ? replica.meta.size : root.stat!.size;
    const allocated = Math.min(size, disks.reduce((a, d) => a + (d.stat?.blocks ?? 0) * 512, 0) +
      (layers.backing()?.layer.allocatedBytes ?? 0));
    const view = new LazyView(snapshot ?? 'volume', () => layers.view(snapshot, { cacheBytes: opts.cacheBytes }));
    const mt = root.stat?.mtime ?? now;
    const node: FileNode = {
      kind: 'file', size, mode: 0o100000 | opts.fileMode(root), mtime: mt, ctime: root.stat?.ctime ?? now, allocated, view,
    };
    dir.entries.set(name, node);
    tree.views.push({ node, view, disks });
  };

  addView(root, 'volume.img', undefined, replica.viewRoot());
  for (const s of replica.snapshots()) addView(snaps, `${s.name}.img`, s.name, s);
  root.entries.set('snapshots', snaps);
  // chain.json is built on first use: a 250-snapshot report is ~20 ms that
  // a mount need not wait for.
  let json: Buffer | undefined;
  const report = () => (json ??= Buffer.from(`${JSON.stringify(replicaReport(layers), null, 2)}\n`));
  root.entries.set('chain.json', {
    kind: 'file', mode: 0o100000 | (opts.fileMode(undefined) & 0o444), mtime: now, ctime: now,
    get size() { return report().length; },
    get allocated() { return report().length; },
    get content() { return report(); },
  });
  return tree;
}

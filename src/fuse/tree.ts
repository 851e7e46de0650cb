/**
 * What the mount shows: a small read-only tree built once at mount time from
 * a Catalog's metadata only. Every readable view is a file at its catalog
 * path (a replica directory: `volume.img`, `snapshots/NAME.img`,
 * `heads/FILE`, `chain.json`; a node, a backup target or a v2 disk:
 * `volumes/...`, `backing-images/...`, `catalog.json`); a view with a
 * `problem` is left out (the report says why).
 *
 * Views are opened lazily: a 250-snapshot replica or a node of 500 replicas
 * mounts without opening their chains; each view's Chain (and its
 * resolution cache) is made on first open.
 *
 * A lazy directory (`Catalog.lazyDirectories`: a backup target's
 * `volumes/<volume>/backups/`) is empty at mount; `expandDir` fills it from
 * `Catalog.expand` on its first lookup or listing.
 */
import type { Chain } from '../chain/chain';
import type { Catalog, CatalogView, OpenedView } from '../source/catalog';

export interface FileNode {
  kind: 'file';
  size: number;
  mode: number;
  mtime: Date;
  ctime: Date;
  /** Allocated bytes shown as st_blocks*512: an upper bound until counted. */
  allocated: number;
  /** Static content (chain.json, catalog.json), or a view opened on demand. */
  content?: Buffer;
  view?: LazyView;
  /** Run (and wait for) before `content` and `size` may be read: its size is unknown until opened. */
  prepare?: () => Promise<void>;
}

export interface DirNode {
  kind: 'dir';
  mode: number;
  mtime: Date;
  entries: Map<string, Node>;
  /** Entries listed on first use (`expandDir`); false once listed. */
  lazy?: boolean;
}

export type Node = FileNode | DirNode;

/** A view opened on first use; `stale` is set when one of its files changes on disk. */
export class LazyView {
  readonly label: string;
  private readonly entry: CatalogView;
  private readonly cacheBytes: number;
  private opening: Promise<OpenedView> | undefined;
  private view: OpenedView | undefined;
  stale: string | undefined;

  constructor(entry: CatalogView, cacheBytes: number) {
    this.entry = entry;
    this.label = entry.path;
    this.cacheBytes = cacheBytes;
  }

  /** Opens the view once; later calls share the result (or the error). */
  async open(): Promise<OpenedView> {
    this.opening ??= this.entry.open({ cacheBytes: this.cacheBytes }).then((v) => (this.view = v));
    return this.opening;
  }

  /** The chain of an opened view (open() first). */
  get chain(): Chain {
    if (!this.view) throw new Error(`view ${this.label} used before it was opened`); // a bug
    return this.view.chain;
  }

  get opened(): OpenedView | undefined {
    return this.view;
  }
}

export interface Tree {
  root: DirNode;
  /** Every view, for the staleness watch. */
  views: { node: FileNode; view: LazyView }[];
}

export interface TreeOptions {
  cacheBytes: number;
  /** With --allow-other, file modes follow the source's own files; otherwise 0o444. */
  sourceModes: boolean;
}

/** The directory holding `p` (made as needed below `root`) and p's last component. */
function dirOf(root: DirNode, p: string, now: Date): { dir: DirNode; name: string } {
  const parts = p.split('/');
  let dir = root;
  for (const part of parts.slice(0, -1)) {
    let next = dir.entries.get(part);
    if (!next) {
      next = { kind: 'dir', mode: 0o40555, mtime: now, entries: new Map() };
      dir.entries.set(part, next);
    }
    if (next.kind !== 'dir') throw new Error(`mount tree: ${p} is below a file`); // a bug in a catalog
    dir = next;
  }
  return { dir, name: parts[parts.length - 1] };
}

/** Adds the readable views (those without a problem) below `root`, at their paths relative to `base`. */
function addViews(tree: Tree, root: DirNode, base: string, views: CatalogView[], opts: TreeOptions, now: Date): void {
  for (const v of views) {
    if (v.problem) continue;
    if (!v.path.startsWith(base)) throw new Error(`mount tree: ${v.path} is not below ${base}`); // a bug in a catalog
    const { dir, name } = dirOf(root, v.path.slice(base.length), now);
    const view = new LazyView(v, opts.cacheBytes);
    const node: FileNode = {
      kind: 'file', size: v.size, mode: 0o100000 | (opts.sourceModes ? v.mode & 0o444 : 0o444),
      mtime: v.mtime, ctime: v.ctime, allocated: v.allocatedBytes, view,
    };
    dir.entries.set(name, node);
    tree.views.push({ node, view });
  }
}

export function buildTree(catalog: Catalog, opts: TreeOptions): Tree {
  const now = new Date();
  const root: DirNode = { kind: 'dir', mode: 0o40555, mtime: now, entries: new Map() };
  const tree: Tree = { root, views: [] };
  addViews(tree, root, '', catalog.views(), opts, now);
  for (const f of catalog.files()) {
    const { dir, name } = dirOf(root, f.path, now);
    // Built on first use: a 250-snapshot report is ~20 ms that a mount need not wait for.
    let bytes: Buffer | undefined;
    const content = () => (bytes ??= f.content());
    dir.entries.set(name, {
      kind: 'file', mode: 0o100444, mtime: now, ctime: now,
      get size() { return content().length; },
      get allocated() { return content().length; },
      get content() { return content(); },
      prepare: f.prepare ? () => f.prepare!() : undefined,
    });
  }
  // Directories the catalog names but that hold nothing readable still show (e.g. snapshots/).
  for (const d of catalog.directories?.() ?? []) dirOf(root, `${d}/.`, now);
  for (const d of catalog.lazyDirectories?.() ?? []) {
    const { dir } = dirOf(root, `${d}/.`, now);
    if (dir.entries.size === 0) dir.lazy = true; // views already listed there: nothing left to list
  }
  return tree;
}

/**
 * The entries of the lazy directory `dir` (at mount-tree path `dirPath`, no
 * leading slash) from its listed `views`: a new entry map, not yet attached
 * (the caller numbers it for the binding, then sets `dir.entries`). The
 * readable views join `tree.views`.
 */
export function expandDir(tree: Tree, dirPath: string, views: CatalogView[], opts: TreeOptions): Map<string, Node> {
  const fresh: DirNode = { kind: 'dir', mode: 0o40555, mtime: new Date(), entries: new Map() };
  addViews(tree, fresh, `${dirPath}/`, views, opts, fresh.mtime);
  return fresh.entries;
}

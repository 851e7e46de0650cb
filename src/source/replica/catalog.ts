/**
 * A replica directory as a Catalog:
 *
 *   <prefix>volume.img            volume.meta's head
 *   <prefix>snapshots/NAME.img    every snapshot (off-chain and removed ones included)
 *   <prefix>heads/FILE            every other head file with a .meta (copies, failed snapshots)
 *   <prefix>chain.json            the report (`inspect --json`)
 *
 * Each view is validated on its own chain, built from its own root, as the
 * engine's OpenSnapshot does (longhorn-engine pkg/replica: NewReadOnly opens
 * a snapshot's chain and never looks at the head): a broken file fails only
 * the views whose chain needs it, with the one-line error naming it.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ChainOptions } from '../../chain/chain';
import { ChainfsError, UsageError } from '../../errors';

/** Which sources each selection option is for (for the refusal on a replica directory). */
const FLAG_SOURCES = {
  volume: 'data roots, backup targets and v2 disks',
  replica: 'data roots and v2 disks',
  backup: 'backup targets',
  backingImage: 'data roots, backup targets and v2 disks',
  lvol: 'v2 disks',
} as const;
import type { Catalog, CatalogFile, CatalogView, OpenedView, SourceOptions, ViewKind, ViewSelector } from '../catalog';
import { LayerSet } from './layers';
import { findWriters } from './live';
import type { DiskMeta } from './meta';
import { Replica, type Disk } from './replica';
import { renderReplica, replicaReport, type ReplicaReport } from './report';

export interface ReplicaCatalogOptions extends SourceOptions {
  /** Prefix of every view path and file path, e.g. 'volumes/pvc-1/replicas/pvc-1-1a2b3c4d/'; '' for a lone replica. */
  prefix?: string;
  /** Data roots whose backing-images/<name>-<uuid>/ directories are searched for the backing image (after BackingFilePath minus /host). */
  backingRoots?: string[];
}

export class ReplicaCatalog implements Catalog {
  readonly kind = 'replica';
  readonly label: string;
  readonly replica: Replica;
  readonly layers: LayerSet;
  private readonly prefix: string;
  private list: ReplicaView[] | undefined;
  private reportMemo: ReplicaReport | undefined;
  private backingMemo: { problem: string | undefined } | undefined;

  private constructor(replica: Replica, prefix: string) {
    this.replica = replica;
    this.layers = new LayerSet(replica);
    this.prefix = prefix;
    this.label = replica.dir;
  }

  /**
   * Reads metadata only; throws ChainfsError only when the directory is not
   * a replica directory at all (or volume.meta is corrupt without
   * `recoverVolumeMeta`). Broken chains become `problem`s of the views they break.
   */
  static open(dir: string, opts: ReplicaCatalogOptions = {}): ReplicaCatalog {
    const replica = Replica.open(dir, {
      backingFile: opts.backingFile, force: opts.force, recoverVolumeMeta: opts.recoverVolumeMeta,
      backingRoots: opts.backingRoots,
    });
    return new ReplicaCatalog(replica, opts.prefix ?? '');
  }

  get warnings(): string[] {
    return this.replica.warnings;
  }

  /** Why the backing image cannot be opened, if it cannot: every view needs it (memoized; the image is not kept open). */
  backingProblem(): string | undefined {
    if (this.backingMemo === undefined) this.backingMemo = { problem: this.layers.backingProblem() };
    return this.backingMemo.problem;
  }

  views(): CatalogView[] {
    if (!this.list) {
      const r = this.replica;
      const head = r.disks.get(r.meta.head);
      this.list = [new ReplicaView(this, `${this.prefix}volume.img`, 'head', r.meta.head, head)];
      for (const s of r.snapshots()) this.list.push(new ReplicaView(this, `${this.prefix}snapshots/${s.name}.img`, 'snapshot', s.file, s));
      for (const h of r.otherHeads()) this.list.push(new ReplicaView(this, `${this.prefix}heads/${h.file}`, 'head', h.file, h));
    }
    return this.list;
  }

  view(p: string): CatalogView | undefined {
    return this.views().find((v) => v.path === p);
  }

  /** volume.meta's head view (its `problem` set if its chain is broken). */
  headView(): CatalogView {
    return this.views()[0];
  }

  files(): CatalogFile[] {
    return [{ path: `${this.prefix}chain.json`, content: () => Buffer.from(`${JSON.stringify(this.report(), null, 2)}\n`) }];
  }

  directories(): string[] {
    return [`${this.prefix}snapshots`];
  }

  inUse(): string[] {
    return findWriters(this.replica.dir).map((w) =>
      `${w.file}: open for writing by process ${w.pid} (${w.command}): the replica is in use; views that change while mounted fail with EIO`);
  }

  report(): ReplicaReport {
    return (this.reportMemo ??= replicaReport(this.layers));
  }

  render(): string {
    return renderReplica(this.report());
  }

  select(sel: ViewSelector): CatalogView {
    const foreign = (['volume', 'replica', 'backup', 'backingImage', 'lvol'] as const).filter((k) => sel[k] !== undefined);
    if (foreign.length) {
      const flag = `--${foreign[0].replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
      throw new UsageError(this.replica.dir, `${flag} does not apply to a replica directory (it is for ${FLAG_SOURCES[foreign[0]]})`);
    }
    if (sel.snapshot !== undefined && sel.head !== undefined) throw new UsageError(undefined, 'give --snapshot or --head, not both');
    const r = this.replica;
    let file = r.meta.head;
    if (sel.snapshot !== undefined) file = r.findSnapshot(sel.snapshot).file;
    else if (sel.head !== undefined) file = r.findHead(sel.head).file;
    return this.views().find((v) => (v as ReplicaView).rootFile === file)!;
  }

  close(): void {
    this.layers.close();
  }
}

/** One view of a replica: the chain rooted at one disk file. */
class ReplicaView implements CatalogView {
  readonly path: string;
  readonly kind: ViewKind;
  readonly name: string;
  readonly rootFile: string;
  readonly size: number;
  readonly allocatedBytes: number;
  readonly mtime: Date;
  readonly ctime: Date;
  readonly mode: number;
  readonly problem: string | undefined;
  private readonly catalog: ReplicaCatalog;
  private readonly root: Disk | undefined;

  constructor(catalog: ReplicaCatalog, p: string, kind: ViewKind, rootFile: string, root: Disk | undefined) {
    const r = catalog.replica;
    this.catalog = catalog;
    this.path = p;
    this.kind = kind;
    this.rootFile = rootFile;
    this.root = root;
    this.problem = r.chainProblem(rootFile) ?? catalog.backingProblem();
    const isMain = rootFile === r.meta.head;
    const volume = path.basename(r.dir).replace(/-[0-9a-f]{8}$/, '');
    this.name = isMain ? volume : `${volume}-${root?.kind === 'snapshot' ? root.name : rootFile.replace(/\.img$/, '')}`;
    this.size = isMain ? r.meta.size : root?.stat?.size ?? 0;
    const now = new Date();
    this.mtime = root?.stat?.mtime ?? now;
    this.ctime = root?.stat?.ctime ?? now;
    this.mode = (root?.stat?.mode ?? 0o444) & 0o444;
    let allocated = 0;
    if (!this.problem) {
      for (const d of r.chain(rootFile)) allocated += (d.stat?.blocks ?? 0) * 512;
      allocated += backingAllocated(r);
    }
    this.allocatedBytes = Math.min(this.size, allocated);
  }

  async open(opts: ChainOptions): Promise<OpenedView> {
    return this.openSync(opts);
  }

  /** The same, for callers that cannot wait (a replica's views open from local metadata). */
  openSync(opts: ChainOptions): OpenedView {
    if (this.problem) throw new ChainfsError(undefined, this.problem);
    const c = this.catalog;
    const v = c.layers.viewOf(this.rootFile, opts);
    const r = c.replica;
    const warnings = [...c.layers.warnings];
    const meta = this.root?.meta as DiskMeta | undefined;
    if (meta?.removed) {
      warnings.push(`${this.root!.path}: snapshot ${this.root!.name} is marked Removed: its own bytes may already be merged into its child; the view may not be what the volume held then`);
    }
    const bi = c.layers.backing();
    return {
      chain: v.chain,
      files: [...v.disks.map((d) => d.path), ...(bi ? [bi.path] : [])],
      // Longhorn's own directories: the replica's, and the backing image's (it must hold one file).
      roots: [r.dir, ...(bi ? [path.dirname(bi.path)] : [])],
      warnings,
      checkNotLive: this.rootFile === r.meta.head ? (force, warn) => checkNotLive(r, force, warn) : undefined,
      close: () => undefined, // the layer files are the catalog's, shared by its views
    };
  }
}

function backingAllocated(r: Replica): number {
  if (!r.backing || r.backing instanceof ChainfsError) return 0;
  try {
    return fs.statSync(r.backing.path).blocks * 512;
  } catch {
    return 0;
  }
}

/**
 * A replica whose files another process has open for writing is attached to
 * a running engine (Dirty or not: volume.meta says Dirty only once written to).
 */
function checkNotLive(replica: Replica, force: boolean, warn: (m: string) => void): void {
  const writers = findWriters(replica.dir);
  if (writers.length === 0) return;
  const w = writers[0];
  const who = `${w.command} (pid ${w.pid}) has ${path.basename(w.file)} open for writing` +
    (writers.length > 1 ? ` (and ${writers.length - 1} more open file(s))` : '');
  if (!force) {
    throw new ChainfsError(replica.dir, `replica is in use: ${who}, ` +
      'so the head may change under the export. Export a snapshot instead (--snapshot NAME), ' +
      'or pass --force to export the live head anyway');
  }
  warn(`${replica.dir}: replica is in use (${who}); exporting the live head because of --force: the image may be inconsistent`);
}

/**
 * One or more Longhorn data roots as a Catalog (issue #11):
 *
 *   volumes/<volume>/volume.img                         the picked replica's head (absent without a pick)
 *   volumes/<volume>/replicas/<dir>/volume.img          every usable replica (all of them with --force),
 *   volumes/<volume>/replicas/<dir>/snapshots/NAME.img    each a ReplicaCatalog under that prefix
 *   volumes/<volume>/replicas/<dir>/chain.json
 *   backing-images/<name>.img                           every backing image, copies on several disks as one
 *   catalog.json                                        the report (`inspect --json`)
 *
 * Opening reads directory listings, cfg and .meta files and stats; no layer
 * file is opened until a view is (500 replicas list in well under a second).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ChainOptions } from '../../chain/chain';
import { Chain } from '../../chain/chain';
import { ChainfsError, UsageError } from '../../errors';
import { openImage } from '../../layer/open-image';
import type { Catalog, CatalogFile, CatalogView, OpenedView, SourceOptions, ViewKind, ViewSelector } from '../catalog';
import { findWriters } from '../replica/live';
import { didYouMean } from '../../text';
import { indexBackingImages, servedCopy, type NodeBackingImage } from './backing-images';
import { checkSizes, replicaFacts, type ReplicaFacts } from './facts';
import { volumeOfReplicaDir } from './names';
import { pickReplica } from './pick';
import { renderNode } from './render';
import { CANNOT_KNOW, rootReport, volumeReport, type NodeReport, type VolumeFacts } from './report';
import { scanRoot, type RootScan } from './scan';

export class NodeCatalog implements Catalog {
  readonly kind = 'node';
  readonly label: string;
  readonly warnings: string[];
  readonly roots: RootScan[];
  readonly volumes: VolumeFacts[];
  readonly backingImages: NodeBackingImage[];
  private readonly force: boolean;
  private list: CatalogView[] | undefined;
  private reportMemo: NodeReport | undefined;

  private constructor(label: string, roots: RootScan[], volumes: VolumeFacts[], backingImages: NodeBackingImage[],
    warnings: string[], force: boolean) {
    this.label = label;
    this.roots = roots;
    this.volumes = volumes;
    this.backingImages = backingImages;
    this.warnings = warnings;
    this.force = force;
  }

  /** Opens the data roots (metadata only). Throws ChainfsError when one is no data root. */
  static open(rootArgs: string[], opts: SourceOptions = {}): NodeCatalog {
    const roots: RootScan[] = [];
    const warnings: string[] = [];
    for (const a of rootArgs) {
      const scan = scanRoot(a);
      if (roots.some((r) => r.path === scan.path)) {
        warnings.push(`${scan.path}: given twice; read once`);
        continue;
      }
      const twin = roots.find((r) => r.cfg && scan.cfg && r.cfg.diskUUID === scan.cfg.diskUUID);
      if (twin) warnings.push(`${scan.path}: same diskUUID ${scan.cfg!.diskUUID} as ${twin.path}: two copies of one disk?`);
      roots.push(scan);
      warnings.push(...scan.warnings);
    }
    const rootPaths = roots.map((r) => r.path);
    const nameCount = new Map<string, number>();
    for (const r of roots) for (const e of r.replicas) nameCount.set(e.dir, (nameCount.get(e.dir) ?? 0) + 1);
    const byVolume = new Map<string, ReplicaFacts[]>();
    roots.forEach((root, i) => {
      for (const e of root.replicas) {
        const id = (nameCount.get(e.dir) ?? 0) > 1 ? `${e.dir}@${i + 1}` : e.dir;
        if (id !== e.dir) warnings.push(`${e.path}: ${e.dir} is on several roots; this copy is ${id} (root ${i + 1})`);
        const f = replicaFacts(e, id, root, { ...opts, backingRoots: rootPaths });
        const list = byVolume.get(e.volume) ?? [];
        list.push(f);
        byVolume.set(e.volume, list);
      }
    });
    const wholeSeconds: string[] = [];
    const volumes: VolumeFacts[] = [...byVolume.keys()].sort(byName).map((name) => {
      const replicas = byVolume.get(name)!.sort((a, b) => byName(a.id, b.id));
      const size = checkSizes(replicas);
      const pick = pickReplica(replicas.filter((r) => !r.unusable).map((r) => ({
        dir: r.id, revisionCounter: r.revisionCounter.kind === 'value' ? r.revisionCounter.value : null,
        headMtimeNs: r.headMtimeNs!, headAllocatedBytes: r.headAllocatedBytes!,
      })));
      if (pick.rule === 'salvage' && replicas.some((r) => !r.unusable && r.headMtimeNs! % 1_000_000_000n === 0n)) wholeSeconds.push(name);
      return { name, size, pick, replicas };
    });
    if (wholeSeconds.length > 0) {
      // One warning for the node, not one per volume: 250 volumes must not print 250 lines on every command.
      warnings.push(`${wholeSeconds.length} volume(s) picked by the salvage rule have head mtimes in whole seconds ` +
        `(${wholeSeconds.slice(0, 5).join(', ')}${wholeSeconds.length > 5 ? ', ...' : ''}): if the files were copied by a tool ` +
        'that keeps only whole seconds, the 5 s window may not match the original disks');
    }
    const users = new Map<string, string[]>();
    for (const v of volumes) for (const r of v.replicas) if (r.backingDir) users.set(r.backingDir, [...(users.get(r.backingDir) ?? []), r.id]);
    const backingImages = indexBackingImages(roots, users);
    for (const b of backingImages) if (b.mismatch) warnings.push(`backing image ${b.dir}: ${b.mismatch}`);
    const unused = backingImages.filter((b) => b.usedBy.length === 0).map((b) => b.dir);
    if (unused.length > 0) warnings.push(`${unused.length} backing image(s) used by no replica on these roots: ${unused.slice(0, 5).join(', ')}${unused.length > 5 ? ', ...' : ''}`);
    return new NodeCatalog(rootPaths.join(' '), roots, volumes, backingImages, warnings, opts.force ?? false);
  }

  /** The replicas whose views are served: the usable ones, or every readable one with --force. */
  private served(v: VolumeFacts): ReplicaFacts[] {
    return v.replicas.filter((r) => r.catalog && (!r.unusable || this.force));
  }

  views(): CatalogView[] {
    if (!this.list) {
      const list: CatalogView[] = [];
      for (const v of this.volumes) {
        const pick = v.replicas.find((r) => r.id === v.pick.pick);
        if (pick?.catalog) list.push(new AliasView(`volumes/${v.name}/volume.img`, 'volume', v.name, pick.catalog.headView()));
        for (const r of this.served(v)) list.push(...r.catalog!.views());
      }
      for (const b of this.backingImages) {
        const copy = servedCopy(b);
        if (copy?.file) list.push(new BackingImageView(`backing-images/${b.id}.img`, b.id, copy.file));
      }
      this.list = list;
    }
    return this.list;
  }

  view(p: string): CatalogView | undefined {
    return this.views().find((v) => v.path === p);
  }

  files(): CatalogFile[] {
    const out: CatalogFile[] = [{ path: 'catalog.json', content: () => Buffer.from(`${JSON.stringify(this.report(), null, 2)}\n`) }];
    for (const v of this.volumes) for (const r of this.served(v)) out.push(...r.catalog!.files());
    return out;
  }

  volumeNames(): string[] {
    return this.volumes.map((v) => v.name);
  }

  /** Every served replica's `snapshots/`, and each volume's `replicas/` (shown even when none is served). */
  directories(): string[] {
    const out: string[] = [];
    for (const v of this.volumes) {
      out.push(`volumes/${v.name}/replicas`);
      for (const r of this.served(v)) out.push(...(r.catalog!.directories?.() ?? []));
    }
    return out;
  }

  /** Processes with files under a root open for writing: one /proc walk per root, not per replica. */
  inUse(): string[] {
    return this.roots.flatMap((r) => findWriters(r.path).map((w) =>
      `${w.file}: open for writing by process ${w.pid} (${w.command}): a replica on ${r.path} is in use; views that change while mounted fail with EIO`));
  }

  report(): NodeReport {
    if (!this.reportMemo) {
      const perRoot = new Map<string, number>();
      for (const v of this.volumes) for (const r of v.replicas) perRoot.set(r.root.path, (perRoot.get(r.root.path) ?? 0) + 1);
      this.reportMemo = {
        roots: this.roots.map((r) => rootReport(r, perRoot.get(r.path) ?? 0)),
        volumes: this.volumes.map(volumeReport),
        backingImages: this.backingImages,
        noise: this.roots.flatMap((r) => r.noise),
        tmp: this.roots.flatMap((r) => r.tmp),
        unusedBackingImages: this.backingImages.filter((b) => b.usedBy.length === 0).map((b) => b.dir),
        cannotKnow: CANNOT_KNOW,
        warnings: this.warnings,
      };
    }
    return this.reportMemo;
  }

  render(): string {
    return renderNode(this.report());
  }

  /**
   * --volume [--replica DIR] [--snapshot S | --head F], or --backing-image
   * NAME. Without --replica, the pick; without a pick, a refusal listing the
   * replicas. --volume may be left out when --replica names the directory,
   * or when the roots hold one volume.
   */
  select(sel: ViewSelector): CatalogView {
    for (const k of ['backup', 'lvol'] as const) {
      if (sel[k] !== undefined) throw new UsageError(undefined, `--${k} does not apply to data roots (it is for ${k === 'backup' ? 'backup targets' : 'v2 disks'})`);
    }
    if (sel.backingImage !== undefined) {
      if (sel.volume !== undefined || sel.replica !== undefined || sel.snapshot !== undefined || sel.head !== undefined) {
        throw new UsageError(undefined, '--backing-image selects a backing image on its own; leave out --volume, --replica, --snapshot and --head');
      }
      const b = this.backingImages.find((x) => x.id === sel.backingImage || x.name === sel.backingImage || x.dir === sel.backingImage);
      if (!b) throw new ChainfsError(this.label, `no backing image ${JSON.stringify(sel.backingImage)}; ${didYouMean(sel.backingImage, this.backingImages.map((x) => x.id), 'backing images')}`);
      const v = this.view(`backing-images/${b.id}.img`);
      if (!v) throw new ChainfsError(b.copies[0]?.path, `backing image ${b.id} has no usable copy: ${b.copies.flatMap((c) => c.problems).join('; ')}`);
      return v;
    }
    const v = this.volumeFor(sel);
    const inner = { snapshot: sel.snapshot, head: sel.head };
    if (sel.replica !== undefined) {
      const r = v.replicas.find((x) => x.id === sel.replica || x.dir === sel.replica);
      if (!r) throw new ChainfsError(this.label, `volume ${v.name} has no replica ${JSON.stringify(sel.replica)}; ${didYouMean(sel.replica, v.replicas.map((x) => x.id), 'replicas')}`);
      if (v.replicas.filter((x) => x.dir === sel.replica).length > 1) {
        throw new ChainfsError(this.label, `${sel.replica} is on several roots: say which (${v.replicas.filter((x) => x.dir === sel.replica).map((x) => x.id).join(', ')})`);
      }
      if (!r.catalog) throw new ChainfsError(r.path, r.unusable ?? 'not readable');
      if (r.unusable && !this.force) throw new ChainfsError(r.path, `not usable: ${r.unusable}; pass --force to read it anyway`);
      return new WithWarnings(r.catalog.select(inner), r.catalog.warnings);
    }
    const pick = v.replicas.find((x) => x.id === v.pick.pick);
    if (!pick?.catalog) {
      const list = v.replicas.map((x) => `${x.id} (${x.unusable ? `unusable: ${x.unusable}` : x.revisionCounter.kind === 'value' ? `revision.counter ${x.revisionCounter.value}` : 'no revision.counter'})`);
      throw new ChainfsError(this.label, `volume ${v.name}: no replica Longhorn would pick (${v.pick.rule}: ${v.pick.why}); choose one with --replica: ${list.join(', ')}`);
    }
    const chosen = inner.snapshot === undefined && inner.head === undefined
      ? this.view(`volumes/${v.name}/volume.img`)! : pick.catalog.select(inner);
    return new WithWarnings(chosen, pick.catalog.warnings);
  }

  private volumeFor(sel: ViewSelector): VolumeFacts {
    let name = sel.volume;
    if (name === undefined && sel.replica !== undefined) name = volumeOfReplicaDir(sel.replica.replace(/@\d+$/, ''));
    if (name === undefined) {
      if (this.volumes.length === 1) return this.volumes[0];
      throw new ChainfsError(this.label, `data roots hold ${this.volumes.length} volumes: choose one with --volume; ${didYouMean('', this.volumes.map((v) => v.name), 'volumes')}`);
    }
    const v = this.volumes.find((x) => x.name === name);
    if (!v) throw new ChainfsError(this.label, `no volume ${JSON.stringify(name)} on these roots; ${didYouMean(name, this.volumes.map((x) => x.name), 'volumes')}`);
    return v;
  }

  close(): void {
    for (const v of this.volumes) for (const r of v.replicas) r.catalog?.close();
    for (const view of this.list ?? []) if (view instanceof BackingImageView) view.closeLayer();
  }
}

/** The picked replica's head, at the volume's own path. */
class AliasView implements CatalogView {
  readonly path: string;
  readonly kind: ViewKind;
  readonly name: string;
  private readonly target: CatalogView;

  constructor(p: string, kind: ViewKind, name: string, target: CatalogView) {
    this.path = p;
    this.kind = kind;
    this.name = name;
    this.target = target;
  }

  get size(): number { return this.target.size; }
  get allocatedBytes(): number { return this.target.allocatedBytes; }
  get mtime(): Date { return this.target.mtime; }
  get ctime(): Date { return this.target.ctime; }
  get mode(): number { return this.target.mode; }
  get problem(): string | undefined { return this.target.problem; }

  open(opts: ChainOptions): Promise<OpenedView> {
    return this.target.open(opts);
  }
}

/**
 * A selected replica view that also hands over its replica's warnings
 * (Dirty, Rebuilding with --force, orphans) when opened: the node's own
 * warnings leave them out, or 500 replicas would speak on every command.
 */
class WithWarnings extends AliasView {
  private readonly extra: string[];

  constructor(target: CatalogView, extra: string[]) {
    super(target.path, target.kind, target.name, target);
    this.extra = extra;
  }

  override async open(opts: ChainOptions): Promise<OpenedView> {
    const v = await super.open(opts);
    return { ...v, warnings: [...this.extra, ...v.warnings.filter((w) => !this.extra.includes(w))], close: () => v.close() };
  }
}

/** A backing image as a view of its own: one layer, the image's virtual size. */
class BackingImageView implements CatalogView {
  readonly path: string;
  readonly kind: ViewKind = 'backing-image';
  readonly name: string;
  readonly file: string;
  readonly size: number;
  readonly allocatedBytes: number;
  readonly mtime: Date;
  readonly ctime: Date;
  readonly mode: number;
  readonly problem: string | undefined;
  private layer: ReturnType<typeof openImage> | undefined;

  constructor(p: string, name: string, file: string) {
    this.path = p;
    this.name = name;
    this.file = file;
    let size = 0;
    let allocated = 0;
    let problem: string | undefined;
    let st: fs.Stats | undefined;
    try {
      // The header only (qcow2's virtual size): a node has few backing images.
      const img = openImage(file);
      size = img.layer.size;
      allocated = img.layer.allocatedBytes;
      img.layer.close();
      st = fs.statSync(file);
    } catch (e) {
      if (!(e instanceof ChainfsError)) throw e;
      problem = e.message;
    }
    this.size = size;
    this.allocatedBytes = Math.min(size, allocated);
    this.mtime = st?.mtime ?? new Date(0);
    this.ctime = st?.ctime ?? new Date(0);
    this.mode = (st?.mode ?? 0o444) & 0o444;
    this.problem = problem;
  }

  async open(opts: ChainOptions): Promise<OpenedView> {
    if (this.problem) throw new ChainfsError(undefined, this.problem);
    this.layer ??= openImage(this.file);
    const img = this.layer;
    return {
      chain: new Chain([img.layer], img.layer.size, opts),
      files: [this.file],
      roots: [path.dirname(this.file)],
      warnings: img.warnings,
      close: () => undefined, // the layer stays with the catalog, shared by every opening
    };
  }

  closeLayer(): void {
    this.layer?.layer.close();
    this.layer = undefined;
  }
}

function byName(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

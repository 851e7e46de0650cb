/**
 * One or more v2 disks as a Catalog:
 *
 *   volumes/<volume>/volume.img                               the volume: the picked replica's head
 *   volumes/<volume>/replicas/<replica>/volume.img            a replica's head
 *   volumes/<volume>/replicas/<replica>/snapshots/<name>.img  its snapshots
 *   backing-images/<name>.img                                 backing image lvols
 *   lvols/<lvol name>.img                                     every lvol by its SPDK name
 *   catalog.json                                              the report
 *
 * Each view is the chain of its root lvol through `SNAP`; a view whose
 * chain meets damage (a bad metadata page, a cycle, a cluster past the
 * device end) carries that as its `problem`; the others are served.
 */
import { Chain, type ChainOptions } from '../../chain/chain';
import { ChainfsError, UsageError } from '../../errors';
import type { Catalog, CatalogFile, CatalogView, OpenedView, ViewKind, ViewSelector } from '../catalog';
import { compareText, didYouMean } from '../../text';
import type { Disk } from './disk';
import { chainOf, type Lvol } from './lvstore';
import { buildModel, component, diskTags, type Model, type ReplicaEntry } from './model';
import { renderText, spdkReport } from './report';

export class SpdkCatalog implements Catalog {
  readonly kind = 'spdk';
  readonly label: string;
  readonly warnings: string[];
  readonly disks: Disk[];
  readonly model: Model;
  private readonly list: SpdkView[] = [];
  private readonly byPath = new Map<string, SpdkView>();

  constructor(disks: Disk[], warnings: string[]) {
    this.disks = disks;
    this.label = disks.map((d) => d.dev.path).join(',');
    this.warnings = [...warnings, ...disks.flatMap((d) => [...d.lvs.bs.warnings, ...d.lvs.warnings])];
    this.model = buildModel(disks);
    for (const v of this.model.volumes) {
      for (const r of v.replicas) {
        const id = r.dir.split('/').pop()!;
        if (id !== component(r.name)) this.warnings.push(`${r.disk.dev.path}: replica ${r.name} is on several disks; this copy is ${id} (disk ${disks.indexOf(r.disk) + 1})`);
      }
    }
    const tags = diskTags(disks);
    for (const v of this.model.volumes) {
      const p = v.picked;
      if (p) this.add(new SpdkView(p.disk, p.head!, `volumes/${component(v.name)}/volume.img`, 'volume', v.name, replicaWarnings(p, p.head!)));
      for (const r of v.replicas) {
        if (r.head) this.add(new SpdkView(r.disk, r.head, `${r.dir}/volume.img`, 'head', r.name, replicaWarnings(r, r.head)));
        for (const s of r.snapshots) {
          const name = s.longhorn.snapshot!;
          this.add(new SpdkView(r.disk, s, `${r.dir}/snapshots/${component(name, '.img')}`, 'snapshot', name, replicaWarnings(r, s)));
        }
      }
    }
    for (const b of this.model.backingImages) this.add(new SpdkView(b.disk, b.lvol, b.path, 'backing-image', b.name, []));
    const names = new Map<string, number>();
    for (const d of disks) for (const l of d.lvs.lvols.values()) names.set(l.name, (names.get(l.name) ?? 0) + 1);
    for (const d of disks) {
      for (const l of [...d.lvs.lvols.values()].sort((a, b) => compareText(a.name, b.name))) {
        const suffix = names.get(l.name)! > 1 ? `@${tags.get(d)}` : '';
        this.add(new SpdkView(d, l, `lvols/${component(l.name + suffix, '.img')}`, 'lvol', l.name, lvolWarnings(l)));
      }
    }
  }

  private add(v: SpdkView): void {
    let p = v.path;
    for (let i = 2; this.byPath.has(p); i++) p = v.path.replace(/\.img$/, `~${i}.img`);
    v.path = p;
    this.list.push(v);
    this.byPath.set(p, v);
  }

  views(): CatalogView[] {
    return this.list;
  }

  /** Every volume, with a picked replica or not; by its name (the view path escapes it). */
  volumeNames(): string[] {
    return this.model.volumes.map((v) => v.name);
  }

  view(path: string): CatalogView | undefined {
    return this.byPath.get(path);
  }

  files(): CatalogFile[] {
    return [{ path: 'catalog.json', content: () => Buffer.from(`${JSON.stringify(this.report(), null, 2)}\n`) }];
  }

  report(): object {
    return spdkReport(this);
  }

  render(): string {
    return renderText(this);
  }

  select(sel: ViewSelector): CatalogView {
    const foreign = (['head', 'backup'] as const).filter((k) => sel[k] !== undefined);
    if (foreign.length) throw new UsageError(this.label, `--${foreign[0]} does not apply to a v2 disk (use --volume/--replica/--snapshot, --backing-image or --lvol)`);
    if (sel.lvol !== undefined) {
      if (sel.volume ?? sel.replica ?? sel.snapshot ?? sel.backingImage) throw new UsageError(undefined, '--lvol names one lvol: give it alone');
      const hits = this.list.filter((v) => v.kind === 'lvol' && (v.lvol.name === sel.lvol || v.path === `lvols/${component(sel.lvol!, '.img')}`));
      return this.one(hits, `lvol ${JSON.stringify(sel.lvol)}`, sel.lvol!, this.list.filter((v) => v.kind === 'lvol').map((v) => v.name), 'lvols');
    }
    if (sel.backingImage !== undefined) {
      if (sel.volume ?? sel.replica ?? sel.snapshot) throw new UsageError(undefined, '--backing-image selects a backing image on its own; leave out --volume, --replica and --snapshot');
      const hits = this.list.filter((v) => v.kind === 'backing-image' && v.name === sel.backingImage);
      return this.one(hits, `backing image ${JSON.stringify(sel.backingImage)}`, sel.backingImage!, this.model.backingImages.map((b) => b.name), 'backing images');
    }
    const r = this.pickReplica(sel);
    if (sel.snapshot === undefined && sel.replica === undefined) return this.byPath.get(`volumes/${component(r.volume)}/volume.img`)!;
    if (sel.snapshot === undefined) {
      if (!r.head) throw new ChainfsError(this.label, `replica ${r.name} has no head lvol on ${r.disk.dev.path} (only snapshots); pick one with --snapshot`);
      return this.byPath.get(`${r.dir}/volume.img`)!;
    }
    const want = sel.snapshot;
    const snaps = this.snapshotsOf(r);
    return this.one(this.snapshotHits(r, want), `snapshot ${JSON.stringify(want)} of replica ${r.name}`, want, snaps.map((v) => v.name), 'snapshots');
  }

  private snapshotsOf(r: ReplicaEntry): SpdkView[] {
    return this.list.filter((v) => v.kind === 'snapshot' && v.path.startsWith(`${r.dir}/snapshots/`));
  }

  /** The snapshot views of `r` that `want` names: by name, lvol name or file name, else by prefix. */
  private snapshotHits(r: ReplicaEntry, want: string): SpdkView[] {
    const snaps = this.snapshotsOf(r);
    const hits = snaps.filter((v) => v.name === want || v.lvol.name === want || v.path.endsWith(`/${component(want, '.img')}`));
    return hits.length ? hits : snaps.filter((v) => v.name.startsWith(want));
  }

  /**
   * The replica `sel` names; else, with --snapshot, one whose snapshot of
   * that name is readable (the salvage pick if its is, else the only
   * replica whose is); else the volume's salvage pick.
   */
  private pickReplica(sel: ViewSelector): ReplicaEntry {
    const all = this.model.volumes.flatMap((v) => v.replicas);
    if (sel.replica !== undefined) {
      // NAME, its directory's name (NAME@<disk tag>), or NAME@<lvstore name> (which two copies of one disk share).
      const named = (r: ReplicaEntry): boolean => r.name === sel.replica || replicaId(r) === sel.replica || `${r.name}@${r.disk.lvs.name}` === sel.replica;
      const hits = all.filter((r) => named(r) && (sel.volume === undefined || r.volume === sel.volume));
      if (hits.length === 1) return hits[0];
      if (hits.length > 1) throw new ChainfsError(this.label, `replica ${sel.replica} is on several disks: ${hits.map(replicaId).join(', ')}; name one of those`);
      const names = all.filter((r) => sel.volume === undefined || r.volume === sel.volume).map(replicaId);
      throw new ChainfsError(this.label, `no replica ${JSON.stringify(sel.replica)}${sel.volume ? ` of volume ${sel.volume}` : ''}; ${didYouMean(sel.replica, names, 'replicas')}`);
    }
    let vol = this.model.volumes.find((v) => v.name === sel.volume);
    if (sel.volume === undefined) {
      if (this.model.volumes.length !== 1) {
        if (this.model.volumes.length === 0) throw new ChainfsError(this.label, `no Longhorn volume on ${this.disks.length > 1 ? 'these disks' : 'this disk'}; pick an lvol with --lvol or a backing image with --backing-image (inspect lists them)`);
        throw new ChainfsError(this.label, `several volumes on ${this.disks.length > 1 ? 'these disks' : 'this disk'}; pick one with --volume (${didYouMean('', this.model.volumes.map((v) => v.name), 'volumes')})`);
      }
      vol = this.model.volumes[0];
    }
    if (!vol) throw new ChainfsError(this.label, `no volume ${JSON.stringify(sel.volume)}; ${didYouMean(sel.volume!, this.model.volumes.map((v) => v.name), 'volumes')}`);
    const choose = `--replica chooses from: ${vol.replicas.map(replicaId).join(', ')}`;
    const want = sel.snapshot;
    if (want !== undefined) {
      const readable = (r: ReplicaEntry): boolean => { const h = this.snapshotHits(r, want); return h.length === 1 && !h[0].problem; };
      if (vol.picked && readable(vol.picked)) return vol.picked;
      const ok = vol.replicas.filter(readable);
      if (ok.length === 1) return ok[0];
      const q = JSON.stringify(want);
      if (ok.length > 1) {
        const why = vol.picked ? `the picked replica ${replicaId(vol.picked)} has no readable snapshot ${q}` : 'no replica has a readable head to pick';
        throw new ChainfsError(this.label, `volume ${vol.name}: ${why}, and several replicas have it: ${ok.map(replicaId).join(', ')}; choose one with --replica`);
      }
      if (!vol.picked) {
        const having = vol.replicas.filter((r) => this.snapshotHits(r, want).length > 0);
        if (having.length === 0) {
          const names = [...new Set(vol.replicas.flatMap((r) => this.snapshotsOf(r).map((v) => v.name)))];
          throw new ChainfsError(this.label, `volume ${vol.name}: no replica has a snapshot ${q}; ${didYouMean(want, names, 'snapshots')}`);
        }
        const state = having.map((r) => { const h = this.snapshotHits(r, want); return `${replicaId(r)}: ${h.length > 1 ? `matches ${h.map((v) => v.name).join(', ')}` : h[0].problem}`; });
        throw new ChainfsError(this.label, `volume ${vol.name}: no replica has a readable snapshot ${q} (${state.join('; ')}); ${choose}`);
      }
      return vol.picked;
    }
    if (!vol.picked) throw new ChainfsError(this.label, `volume ${vol.name} has no replica with a readable head: ${vol.replicas.map((r) => `${replicaId(r)}: ${r.head?.problem ?? 'no head'}`).join('; ')}; ${choose} (with --snapshot for a snapshot)`);
    return vol.picked;
  }

  private one(hits: SpdkView[], what: string, query: string, choices: string[], plural: string): SpdkView {
    if (hits.length === 1) return hits[0];
    if (hits.length > 1) throw new ChainfsError(this.label, `${what} matches several: ${hits.map((v) => v.path).join(', ')}`);
    throw new ChainfsError(this.label, `no ${what}; ${didYouMean(query, choices, plural)}`);
  }

  close(): void {
    for (const d of this.disks) d.close();
  }
}

/** A replica as --replica names it: its directory's name (`<replica>` or `<replica>@<disk tag>`). */
function replicaId(r: ReplicaEntry): string {
  return r.dir.slice(r.dir.lastIndexOf('/') + 1);
}

/** Warnings of a replica's head or snapshot view. */
function replicaWarnings(r: ReplicaEntry, l: Lvol): string[] {
  const w = lvolWarnings(l);
  if (r.encrypted) w.push(`volume ${r.volume} is encrypted (its head starts with a LUKS header): this view is ciphertext; open it with cryptsetup on a loop device`);
  if (l === r.head && r.transient.some((t) => t.longhorn.transient === 'rebuilding')) w.push(`replica ${r.name} was being rebuilt (a -rebuilding lvol exists): its data may be incomplete`);
  return w;
}

function lvolWarnings(l: Lvol): string[] {
  const w: string[] = [];
  if (l.torn?.outcome === 'kept') w.push(`${l.name} is a snapshot torn by a crash (${l.torn.xattr}); its clone points to it, so SPDK's load keeps it as a snapshot`);
  if (l.torn?.outcome === 'dropped') w.push(`${l.name} is a snapshot torn by a crash (${l.torn.xattr}) that SPDK's load would delete: not a real snapshot of the volume`);
  if (l.longhorn.role === 'transient') w.push(`${l.name} is a transient lvol (${l.longhorn.transient}): Longhorn removes it when the operation ends`);
  return w;
}

export class SpdkView implements CatalogView {
  path: string;
  readonly kind: ViewKind;
  readonly name: string;
  readonly size: number;
  readonly allocatedBytes: number;
  readonly mtime: Date;
  readonly ctime: Date;
  readonly mode: number;
  readonly problem: string | undefined;
  readonly disk: Disk;
  readonly lvol: Lvol;
  readonly warnings: string[];

  constructor(disk: Disk, lvol: Lvol, path: string, kind: ViewKind, name: string, warnings: string[]) {
    this.disk = disk;
    this.lvol = lvol;
    this.path = path;
    this.kind = kind;
    this.name = name;
    this.warnings = warnings;
    this.size = lvol.size;
    this.problem = lvol.problem ? `lvol ${lvol.name}: ${lvol.problem}` : undefined;
    const cs = disk.lvs.bs.sb.clusterSize;
    const chain = this.problem ? [lvol] : chainOf(lvol, disk.lvs.lvols);
    this.allocatedBytes = Math.min(this.size, chain.reduce((n, l) => n + l.allocatedClusters * cs, 0));
    const created = Date.parse(lvol.xattrs.creation_time ?? '');
    this.mtime = Number.isNaN(created) ? disk.dev.stat.mtime : new Date(created);
    this.ctime = this.mtime;
    this.mode = disk.dev.stat.mode & 0o444;
  }

  async open(opts: ChainOptions): Promise<OpenedView> {
    if (this.problem) throw new ChainfsError(this.disk.dev.path, this.problem);
    const layers = chainOf(this.lvol, this.disk.lvs.lvols).map((l) => this.disk.layer(l));
    const chain = new Chain(layers, this.size, opts);
    return { chain, files: [this.disk.dev.path], roots: [], warnings: [...this.warnings], close: () => undefined };
  }
}

/**
 * A backup target as a Catalog: every complete backup of every volume
 * (`volumes/<volume>/backups/<backup>.img`), every backing-image backup
 * (`backing-images/<name>.img`) and `catalog.json`. In-progress or failed
 * backups are listed with their problem, never served.
 *
 * A backup view is the image Longhorn's restore would produce
 * (`RestoreDeltaBlockBackup`, backupstore `deltablock.go`), sized by the
 * volume's current volume.cfg Size, and by default the *effective volume*:
 * the backup's blocks over the volume's backing image (--backing-file, a
 * data root's copy, or the target's own backing-image backup:
 * backing-source.ts), zero past the image's end.
 * `noBacking` gives exactly restore-to-file's output: the blocks over zeros.
 *
 * Opened lazily (the mount), the volumes are names only at first
 * (`VolumeEntry.unlisted`): `volumes/<volume>/backups` is a lazy directory,
 * and `expand` loads that volume (its cfgs, its lock warning) once, on first
 * use; catalog.json lists every volume before it is built.
 */
import { Chain, type ChainOptions } from '../../chain/chain';
import { ChainfsError, UsageError, oneLine } from '../../errors';
import { BackupBlocksLayer, type BadBlockRecord } from '../../layer/backup-blocks';
import type { Layer } from '../../layer/layer';
import { openImage } from '../../layer/open-image';
import type { Catalog, CatalogFile, CatalogView, OpenedView, SourceOptions, ViewSelector } from '../catalog';
import type { RootBackingCopy } from './backing-roots';
import { backingSourceReport, describeBackingSource, resolveBacking, type BackingSource } from './backing-source';
import { BlockStore } from './block-store';
import { parseBlocks, type BlockMap } from './cfg';
import { LIST_JOBS, deletionLockWarning, loadVolume, mapLimit, type BackingImageEntry, type BackupEntry, type VolumeEntry } from './listing';
import { BACKING_IMAGE_BLOCKS, DEFAULT_BLOCK_SIZE, blockKey, volumeBlocksDir, volumeCfgKey } from './names';
import { renderCatalog } from './render';
import { MAX_CFG_BYTES, type BackupTarget } from './target';
import type { TargetArg } from './url';
import { nameList } from '../../text';
import { mibToBytes } from '../../units';

/** Data roots given after the target, as providers of backing images only (backing-roots.ts). */
export interface BackingRoots {
  roots: string[];
  copies: RootBackingCopy[];
}

/**
 * Volumes listed ahead of a walker (see `expand`). `find` over a mount of
 * 1,000 volumes of 5 backups (medians, this 2-core machine shared, load
 * 7-10): a directory target 2.64 s without read-ahead, 1.57 s with 4 ahead,
 * 1.46 s with 8; S3 on loopback 20.9 s, 10.3 s, 9.8 s; S3 answering after
 * 10 ms 65-73 s, 16-22 s, 10-14 s (a volume's listing is four round trips
 * one after another). On S3 a walk that stops early has paid for the
 * listings of at most this many volumes it did not need.
 */
export const READ_AHEAD_VOLUMES = 8;

/** Default memory budget for decompressed blocks: 32 blocks of 2 MiB. */
const DEFAULT_CACHE_MB = 64;

export interface BadBlockReport extends BadBlockRecord {
  view: string;
}

export class BackupstoreCatalog implements Catalog {
  readonly kind = 'backupstore';
  readonly label: string;
  readonly warnings: string[];
  readonly target: BackupTarget;
  /** Sorted by name; an `unlisted` entry is replaced by the loaded one when its directory is listed. */
  readonly volumes: VolumeEntry[];
  readonly backingImages: BackingImageEntry[];
  readonly store: BlockStore;
  /** Bad blocks served as zeros so far (badBlocks 'zero'), for the report. */
  readonly badBlocks: BadBlockReport[] = [];
  private readonly arg: TargetArg;
  private readonly opts: SourceOptions;
  private readonly all: CatalogView[];
  private readonly byPath = new Map<string, CatalogView>();
  /** Volumes being loaded (lazy open), by name: concurrent listings share one. */
  private readonly loading = new Map<string, Promise<VolumeEntry>>();
  /** Volume name → index in `volumes` (which is replaced entry by entry, never reordered). */
  private readonly indexOf = new Map<string, number>();
  /** Index of the volume whose backups/ a reader asked for last (expand), or -1. */
  private lastAsked = -1;
  /** The views of each volume loaded by a lazy listing, by volume name. */
  private readonly listedViews = new Map<string, CatalogView[]>();
  /** Volumes being listed in the background (read-ahead), by name. */
  private readonly aheadLoading = new Set<string>();
  private readonly backingRoots: BackingRoots;
  private readonly backingSources = new Map<string, BackingSource | undefined>();

  constructor(arg: TargetArg, target: BackupTarget, volumes: VolumeEntry[], backingImages: BackingImageEntry[],
    warnings: string[], opts: SourceOptions, backingRoots: BackingRoots = { roots: [], copies: [] }) {
    this.backingRoots = backingRoots;
    this.arg = arg;
    this.label = arg.label;
    this.target = target;
    this.volumes = volumes;
    this.backingImages = backingImages;
    this.warnings = warnings;
    this.opts = opts;
    this.store = new BlockStore(target, {
      jobs: opts.jobs ?? target.defaultJobs,
      cacheBytes: mibToBytes(opts.cacheMb ?? DEFAULT_CACHE_MB),
      cacheDir: opts.cacheDir,
    });
    this.all = [
      ...volumes.flatMap((v) => v.backups.map((b) => new BackupView(this, v, b))),
      ...backingImages.map((bi) => new BackingImageView(this, bi)),
    ];
    for (const v of this.all) this.byPath.set(v.path, v);
  }

  views(): CatalogView[] {
    return this.all;
  }

  view(p: string): CatalogView | undefined {
    return this.byPath.get(p);
  }

  files(): CatalogFile[] {
    const lazy = this.volumes.some((v) => v.unlisted);
    return [{
      path: 'catalog.json', content: () => Buffer.from(`${JSON.stringify(this.report(), null, 2)}\n`),
      prepare: lazy ? () => this.expandAll() : undefined,
    }];
  }

  /** `volumes/` shows even when no volume is listed (every name was one Longhorn skips, or the target has none). */
  directories(): string[] {
    return ['volumes'];
  }

  lazyDirectories(): string[] {
    return this.volumes.filter((v) => v.unlisted).map((v) => backupsDirPath(v.name));
  }

  /**
   * Lists the lazy directory `volumes/<volume>/backups` (once; concurrent
   * asks share one listing). A walker (`find`, `ls -R`, a backup tool) asks
   * for the volumes in the order of `volumes/`: from the second consecutive
   * ask in that order, the next READ_AHEAD_VOLUMES volumes are listed in the
   * background, never further than that past the last volume asked for. A
   * background listing that fails is dropped: the reader asking for that
   * volume lists it again itself. A single `ls` (no predecessor asked just
   * before) costs exactly its own volume's requests.
   */
  async expand(dir: string): Promise<CatalogView[]> {
    const m = /^volumes\/([^/]+)\/backups$/.exec(dir);
    if (!m) throw new ChainfsError(dir, 'is not a directory this backup target lists lazily'); // a bug
    const i = this.volumeIndex(m[1]);
    const walking = i > 0 && i === this.lastAsked + 1;
    this.lastAsked = i;
    if (walking) this.readAhead(i);
    const background = this.aheadLoading.has(m[1]);
    try {
      await this.listVolume(m[1]);
    } catch (e) {
      if (!background) throw e;
      await this.listVolume(m[1]); // the reader joined read-ahead's listing, which failed: its own try
    }
    // Not a filter of every view: a walk over 1,000 volumes spent 0.28 s of its 1.5 s there.
    return this.listedViews.get(m[1]) ?? this.all.filter((v) => v.path.startsWith(`${dir}/`));
  }

  /** Index of volume `name` in `volumes` (the order of the volumes/ directory), or -1. */
  private volumeIndex(name: string): number {
    if (this.indexOf.size !== this.volumes.length) {
      this.indexOf.clear();
      this.volumes.forEach((v, k) => this.indexOf.set(v.name, k));
    }
    return this.indexOf.get(name) ?? -1;
  }

  /** Starts listing the unlisted volumes among the READ_AHEAD_VOLUMES after `i`, at most READ_AHEAD_VOLUMES at once. */
  private readAhead(i: number): void {
    const end = Math.min(i + 1 + READ_AHEAD_VOLUMES, this.volumes.length);
    for (let k = i + 1; k < end && this.aheadLoading.size < READ_AHEAD_VOLUMES; k++) {
      const name = this.volumes[k].name;
      if (!this.volumes[k].unlisted || this.loading.has(name)) continue;
      this.aheadLoading.add(name);
      this.listVolume(name).catch(() => undefined).finally(() => this.aheadLoading.delete(name));
    }
  }

  /** Loads every volume not loaded yet (lazy open). Throws the first listing error (the others are loaded). */
  async expandAll(): Promise<void> {
    const errors: unknown[] = [];
    await mapLimit(this.volumes.filter((v) => v.unlisted), this.jobs, (v) => this.listVolume(v.name).catch((e: unknown) => {
      errors.push(e);
    }));
    if (errors.length > 0) throw errors[0];
  }

  private get jobs(): number {
    return Math.max(this.opts.jobs ?? LIST_JOBS, 2);
  }

  /** The volume named `name`, loaded (once, however many ask at once) if it was only a name. Throws ChainfsError; retried on the next call. */
  private listVolume(name: string): Promise<VolumeEntry> {
    const v = this.volumes.find((x) => x.name === name);
    if (!v) return Promise.reject(new ChainfsError(this.label, `no volume named ${name} in the target`));
    if (!v.unlisted) return Promise.resolve(v);
    let p = this.loading.get(name);
    if (!p) {
      p = this.loadListed(name).finally(() => this.loading.delete(name));
      this.loading.set(name, p);
    }
    return p;
  }

  private async loadListed(name: string): Promise<VolumeEntry> {
    const v = await loadVolume(this.target, name, this.jobs);
    const lock = await deletionLockWarning(this.target, name);
    const i = this.volumes.findIndex((x) => x.name === name);
    this.volumes[i] = v;
    if (v.problem) this.warnings.push(`volume ${v.name}: ${v.problem}`);
    if (lock) this.warnings.push(lock);
    const views: CatalogView[] = [];
    for (const b of v.backups) {
      const view = new BackupView(this, v, b);
      this.all.push(view);
      this.byPath.set(view.path, view);
      views.push(view);
    }
    this.listedViews.set(name, views);
    return v;
  }

  report(): object {
    return {
      kind: this.kind,
      target: this.label,
      volumes: this.volumes.map((v) => (v.unlisted ? { name: v.name, problem: NOT_LISTED, backups: [] } : {
        name: v.name,
        size: v.cfg?.size,
        created: v.cfg?.createdTime,
        lastBackup: v.cfg?.lastBackupName,
        lastBackupAt: v.cfg?.lastBackupAt,
        blockCount: v.cfg?.blockCount,
        backingImage: v.cfg?.backingImageName || undefined,
        backingImageChecksum: v.cfg?.backingImageChecksum || undefined,
        backingImageSource: v.cfg ? backingSourceReport(this.backingSource(v)) : null,
        compression: v.cfg?.compression,
        storageClass: v.cfg?.storageClassName || undefined,
        dataEngine: v.cfg?.dataEngine,
        labels: v.cfg?.labels,
        problem: v.problem,
        backups: v.backups.map((b) => ({
          name: b.name,
          path: backupPath(b),
          state: backupState(b),
          snapshot: b.cfg?.snapshotName,
          snapshotCreated: b.cfg?.snapshotCreatedAt,
          created: b.cfg?.createdTime || undefined,
          size: b.cfg?.size,
          blocks: b.cfg?.blockCount,
          blockSize: b.cfg?.blockSize,
          compression: b.cfg?.compression,
          incremental: b.cfg?.isIncremental,
          parameters: b.cfg?.parameters,
          newlyUploadedBytes: b.cfg?.newlyUploadedDataSize,
          reUploadedBytes: b.cfg?.reUploadedDataSize,
          labels: b.cfg?.labels,
          problem: b.problem,
        })),
      })),
      backingImages: this.backingImages.map((bi) => ({
        name: bi.name,
        path: backingImagePath(bi.name),
        state: backingImageState(bi),
        size: bi.cfg?.size,
        checksum: bi.cfg?.checksum,
        blocks: bi.cfg?.blockCount,
        compression: bi.cfg?.compression,
        created: bi.cfg?.createdTime,
        completed: bi.cfg?.completeTime || undefined,
        problem: bi.problem,
      })),
      badBlocks: this.badBlocks,
      requests: { blocksFetched: this.store.stats.fetched, bytesFetched: this.store.stats.fetchedBytes },
      warnings: this.warnings,
    };
  }

  render(): string {
    const lines = this.volumes.filter((v) => v.cfg?.backingImageName)
      .map((v) => `  volume ${v.name}: ${describeBackingSource(v.cfg!.backingImageName, this.backingSource(v)!)}`);
    return renderCatalog(this) + (lines.length ? `\nbacking images of the volumes' backups:\n${lines.join('\n')}\n` : '');
  }

  /**
   * Where the backing image of `v`'s backups comes from (undefined: it has
   * none, or no volume.cfg), decided once per volume: backing-source.ts.
   */
  backingSource(v: VolumeEntry): BackingSource | undefined {
    if (!v.cfg) return undefined;
    if (!this.backingSources.has(v.name)) {
      this.backingSources.set(v.name, resolveBacking(v.name, v.cfg, {
        volumeCfg: this.target.where(volumeCfgKey(v.name)), backingFile: this.opts.backingFile, noBacking: this.opts.noBacking,
        roots: this.backingRoots.roots, copies: this.backingRoots.copies, targetEntry: (n) => this.backingImageEntry(n),
      }));
    }
    return this.backingSources.get(v.name);
  }

  /** Local places no output may be written into: the target directory and the data roots given with it. */
  get localRoots(): string[] {
    const local = this.target.localDir;
    return [...(local ? [local] : []), ...this.backingRoots.roots];
  }

  /** What the source's backup URL selects (`?volume=`, `?backup=`, `?backingImage=`), if anything. */
  get urlSelection(): { volume?: string; backup?: string; backingImage?: string } {
    return { volume: this.arg.volume, backup: this.arg.backup, backingImage: this.arg.backingImage };
  }

  select(sel: ViewSelector): CatalogView {
    for (const [flag, v] of [['--replica', sel.replica], ['--snapshot', sel.snapshot], ['--head', sel.head], ['--lvol', sel.lvol]] as const) {
      if (v !== undefined) throw new UsageError(this.label, `${flag} is not an option for a backup target (use --volume, --backup, --backing-image)`);
    }
    const volume = sel.volume ?? this.arg.volume;
    const backup = sel.backup ?? (sel.volume === undefined || sel.volume === this.arg.volume ? this.arg.backup : undefined);
    const bi = sel.backingImage ?? (sel.volume === undefined && sel.backup === undefined ? this.arg.backingImage : undefined);
    if (bi !== undefined && backup === undefined) {
      const v = this.byPath.get(backingImagePath(bi));
      if (v) return v;
      throw new ChainfsError(this.label, `no backing-image backup named ${bi}${choices(this.backingImages.map((b) => b.name))}`);
    }
    if (volume !== undefined && !this.volumes.some((v) => v.name === volume)) {
      throw new ChainfsError(this.label, `no volume named ${volume} in the target${choices(this.volumes.map((v) => v.name))}`);
    }
    const vols = this.volumes.filter((v) => volume === undefined || v.name === volume);
    if (backup !== undefined) {
      const hits = vols.flatMap((v) => v.backups.filter((b) => b.name === backup));
      if (hits.length === 1) return this.byPath.get(backupPath(hits[0]))!;
      if (hits.length > 1) throw new ChainfsError(this.label, `backup ${backup} exists in several volumes; add --volume${choices(hits.map((h) => h.volume))}`);
      throw new ChainfsError(this.label, `no backup named ${backup}${volume ? ` in volume ${volume}` : ''}${choices(vols.flatMap((v) => v.backups.map((b) => b.name)))}`);
    }
    if (vols.length === 1) {
      // A volume alone: its last backup (volume.cfg LastBackupName), as Longhorn's UI offers.
      const v = vols[0];
      const last = v.backups.find((b) => b.name === v.cfg?.lastBackupName) ?? newestComplete(v.backups);
      if (last) return this.byPath.get(backupPath(last))!;
      throw new ChainfsError(this.label, `volume ${v.name} has no complete backup`);
    }
    const complete = this.all.filter((v) => !v.problem);
    if (complete.length === 1) return complete[0];
    throw new ChainfsError(this.label, `the target holds ${complete.length} backups; pick one with --volume V --backup B or --backing-image NAME`
      + `${choices(complete.map((v) => v.path))}`);
  }

  close(): void {
    this.store.close();
    this.target.close();
  }

  /** Records and prints a bad block served as zeros. */
  noteBadBlock(view: string, rec: BadBlockRecord): void {
    this.badBlocks.push({ view, ...rec });
    process.stderr.write(`chainfs: warning: ${oneLine(`${view}: bad block at offset ${rec.offset} (checksum ${rec.checksum}, ${rec.problem}): served as zeros`)}\n`);
  }

  /** The cfg text of an entry: kept from listing, or fetched again (a large cfg). */
  async cfgText(e: { cfgKey: string; text?: string }): Promise<string> {
    return e.text ?? (await this.target.get(e.cfgKey, MAX_CFG_BYTES)).toString('utf8');
  }

  blocksLayer(o: { name: string; cfgKey: string; size: number; map: BlockMap; pool: string; compression: 'gzip' | 'lz4' | 'none'; exact: boolean; view: string }): BackupBlocksLayer {
    const map = o.map;
    return new BackupBlocksLayer({
      name: o.name,
      path: this.target.where(o.cfgKey),
      size: o.size,
      map,
      store: this.store,
      ref: (i) => {
        const checksum = map.checksum(i);
        return { key: blockKey(o.pool, checksum), checksum, compression: o.compression, blockSize: map.blockSize, exact: o.exact };
      },
      badBlocks: this.opts.badBlocks ?? 'fail',
      onBadBlock: (rec) => this.noteBadBlock(o.view, rec),
    });
  }

  backingImageEntry(name: string): BackingImageEntry | undefined {
    return this.backingImages.find((b) => b.name === name);
  }

  get sourceOptions(): SourceOptions {
    return this.opts;
  }
}

/** ` (there are: a, b, c)` for a refusal: the first 8 names and how many more; '' for none. */
export function choices(names: string[]): string {
  if (names.length === 0) return '';
  return ` (there ${names.length === 1 ? 'is' : 'are'}: ${nameList(names)})`;
}

function newestComplete(backups: BackupEntry[]): BackupEntry | undefined {
  return backups.filter((b) => !b.problem && b.cfg)
    .sort((a, b) => (a.cfg!.snapshotCreatedAt < b.cfg!.snapshotCreatedAt ? 1 : -1))[0];
}

export function backupPath(b: BackupEntry): string {
  return `volumes/${b.volume}/backups/${b.name}.img`;
}

/** The mount-tree directory of a volume's backups. */
export function backupsDirPath(volume: string): string {
  return `volumes/${volume}/backups`;
}

/** The problem of a volume a lazy mount has not listed yet (catalog.json lists every one first: never seen there). */
const NOT_LISTED = 'not listed yet (a mount lists a volume when its directory is first read)';

export function backingImagePath(name: string): string {
  return `backing-images/${name}.img`;
}

export function backupState(b: BackupEntry): string {
  if (!b.cfg) return 'unreadable';
  if (b.damaged) return 'damaged';
  if (b.cfg.createdTime === '') return 'in progress or failed';
  return b.problem ? 'unusable' : 'complete';
}

export function backingImageState(bi: BackingImageEntry): string {
  if (!bi.cfg) return 'unreadable';
  if (bi.damaged) return 'damaged';
  return bi.problem ? 'in progress or failed' : 'complete';
}

/**
 * The error of opening an entry with a problem: `where: problem`, the path
 * once (most problems, from the cfg's parser, start with it already).
 */
export function problemError(where: string, problem: string): ChainfsError {
  return problem.startsWith(`${where}: `) ? new ChainfsError(where, problem.slice(where.length + 2)) : new ChainfsError(where, problem);
}

function date(s: string | undefined): Date {
  const d = s ? new Date(s) : new Date(0);
  return Number.isNaN(d.getTime()) ? new Date(0) : d;
}

class BackupView implements CatalogView {
  readonly kind = 'backup' as const;
  readonly path: string;
  readonly name: string;
  readonly size: number;
  readonly allocatedBytes: number;
  readonly mtime: Date;
  readonly ctime: Date;
  readonly mode = 0o444;
  readonly problem?: string;
  private readonly cat: BackupstoreCatalog;
  private readonly vol: VolumeEntry;
  private readonly entry: BackupEntry;

  constructor(cat: BackupstoreCatalog, vol: VolumeEntry, entry: BackupEntry) {
    this.cat = cat;
    this.vol = vol;
    this.entry = entry;
    this.path = backupPath(entry);
    this.name = entry.name;
    this.size = vol.cfg?.size ?? 0;
    this.allocatedBytes = (entry.cfg?.blockCount ?? 0) * (entry.cfg?.blockSize ?? DEFAULT_BLOCK_SIZE);
    this.mtime = date(entry.cfg?.createdTime || entry.cfg?.snapshotCreatedAt);
    this.ctime = this.mtime;
    this.problem = entry.problem;
  }

  async open(chainOpts: ChainOptions): Promise<OpenedView> {
    if (this.problem) throw problemError(this.cat.target.where(this.entry.cfgKey), this.problem);
    const cfg = this.entry.cfg!;
    const vol = this.vol.cfg!;
    const where = this.cat.target.where(this.entry.cfgKey);
    if (vol.size % cfg.blockSize !== 0) {
      // RestoreDeltaBlockBackup refuses this too (deltablock.go, "volume size is not a multiple of block size").
      throw new ChainfsError(where, `volume size ${vol.size} is not a multiple of the backup's block size ${cfg.blockSize}`);
    }
    const map = parseBlocks(where, await this.cat.cfgText(this.entry), cfg.blockSize, vol.size);
    const warnings: string[] = [];
    const layers: Layer[] = [this.cat.blocksLayer({
      name: this.entry.name, cfgKey: this.entry.cfgKey, size: vol.size, map, pool: volumeBlocksDir(this.vol.name),
      compression: cfg.compression, exact: true, view: this.path,
    })];
    const files: string[] = [];
    const opts = this.cat.sourceOptions;
    const backing = this.cat.backingSource(this.vol);
    try {
      if (backing?.from === 'backing-file' || backing?.from === 'data-root') {
        const img = openImage(backing.file);
        layers.push(img.layer);
        warnings.push(...img.warnings);
        if (backing.from === 'data-root' && !backing.verified) {
          warnings.push(`backing image ${vol.backingImageName}: ${backing.file} is used, but its checksum was not compared `
            + `(${backing.checksum ? `volume.cfg records none` : 'no checksum in its backing.cfg'}) and the target holds no backup of it: check the image`);
        }
        files.push(backing.file);
      } else if (backing?.from === 'target') {
        layers.push(await this.backingLayer(backing.entry, vol.backingImageChecksum, warnings));
      } else if (backing?.from === 'unresolved') {
        throw new ChainfsError(this.cat.label, backing.problem);
      } else if (opts.backingFile && !vol.backingImageName) {
        warnings.push(`volume ${this.vol.name} has no backing image; --backing-file ${opts.backingFile} is not used`);
      }
    } catch (e) {
      for (const l of layers) l.close();
      throw e;
    }
    const chain = new Chain(layers, vol.size, chainOpts);
    return {
      chain, files, roots: this.cat.localRoots, warnings,
      close: () => {
        for (const l of layers) l.close();
      },
    };
  }

  private async backingLayer(bi: BackingImageEntry, checksum: string, warnings: string[]): Promise<Layer> {
    const name = bi.name;
    if (checksum && bi.cfg!.checksum && checksum !== bi.cfg!.checksum) {
      warnings.push(`backing image ${name}: its backup's checksum ${bi.cfg!.checksum.slice(0, 16)}... differs from the one volume ${this.vol.name} was backed up with (${checksum.slice(0, 16)}...)`);
    }
    return openBackingImageLayer(this.cat, bi, `${this.path} (backing image ${name})`);
  }
}

async function openBackingImageLayer(cat: BackupstoreCatalog, bi: BackingImageEntry, view: string): Promise<Layer> {
  const where = cat.target.where(bi.cfgKey);
  const map = parseBlocks(where, await cat.cfgText(bi), DEFAULT_BLOCK_SIZE, bi.cfg!.size || undefined);
  return cat.blocksLayer({
    name: `backing image ${bi.name}`, cfgKey: bi.cfgKey, size: bi.cfg!.size, map, pool: BACKING_IMAGE_BLOCKS,
    compression: bi.cfg!.compression, exact: false, view,
  });
}

class BackingImageView implements CatalogView {
  readonly kind = 'backing-image' as const;
  readonly path: string;
  readonly name: string;
  readonly size: number;
  readonly allocatedBytes: number;
  readonly mtime: Date;
  readonly ctime: Date;
  readonly mode = 0o444;
  readonly problem?: string;
  private readonly cat: BackupstoreCatalog;
  private readonly entry: BackingImageEntry;

  constructor(cat: BackupstoreCatalog, entry: BackingImageEntry) {
    this.cat = cat;
    this.entry = entry;
    this.path = backingImagePath(entry.name);
    this.name = entry.name;
    this.size = entry.cfg?.size ?? 0;
    this.allocatedBytes = (entry.cfg?.blockCount ?? 0) * DEFAULT_BLOCK_SIZE;
    this.mtime = date(entry.cfg?.completeTime || entry.cfg?.createdTime);
    this.ctime = this.mtime;
    this.problem = entry.problem;
  }

  async open(chainOpts: ChainOptions): Promise<OpenedView> {
    if (this.problem) throw problemError(this.cat.target.where(this.entry.cfgKey), this.problem);
    const layer = await openBackingImageLayer(this.cat, this.entry, this.path);
    return {
      chain: new Chain([layer], this.size, chainOpts), files: [], roots: this.cat.localRoots, warnings: [],
      close: () => layer.close(),
    };
  }
}

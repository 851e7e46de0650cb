/**
 * `verify`: every block the chosen backups reference exists, decompresses
 * and matches its checksum, read exactly as Longhorn's restore reads it
 * (block-codec.ts) but without stopping at the first bad block. Each
 * distinct block is fetched once, however many backups share it; a bad block
 * is reported with every backup and offset it breaks (one damaged .blk
 * breaks every later backup that deduplicated against it, longhorn #1385).
 * Also reported: in-progress or failed backups, and unreferenced blocks
 * (garbage left when Longhorn's GC was skipped: harmless, but it costs).
 * A block is garbage only when every cfg of its pool was read: Longhorn's GC
 * refcounts over all cfgs and is skipped when any fails to load
 * (`DeleteDeltaBlockBackup`, backupstore `deltablock.go`). When volume.cfg
 * or a backup cfg cannot be read, an unreferenced block may be that backup's
 * only copy: it is reported as "owner unknown" (and the target as damaged),
 * never as garbage.
 *
 * Costs: one GET per distinct referenced block; for the garbage count a flat
 * listing of each checked block pool (one LIST per 1,000 blocks on S3).
 */
import { ChainfsError } from '../../errors';
import type { BadBlock, BlockProblem } from './block-codec';
import type { BlockRef } from './block-store';
import { type BackupstoreCatalog, choices } from './catalog';
import { parseBlocks, type BlockMap } from './cfg';
import { mapLimit, type BackingImageEntry, type BackupEntry } from './listing';
import { BACKING_IMAGE_BLOCKS, CHECKSUM_RE, DEFAULT_BLOCK_SIZE, blockKey, volumeBlocksDir } from './names';

export interface VerifiedBadBlock {
  offset: number;
  checksum: string;
  problem: BlockProblem;
  detail: string;
}

export interface VerifiedBackup {
  /** The volume, or null for a backing-image backup. */
  volume: string | null;
  name: string;
  kind: 'backup' | 'backing-image';
  state: 'complete' | 'damaged' | 'in progress or failed' | 'unreadable';
  blocks: number;
  badBlocks: VerifiedBadBlock[];
  problem?: string;
}

export interface VerifyReport {
  target: string;
  backups: VerifiedBackup[];
  /** Distinct bad block objects, with the backups they break. */
  badObjects: { key: string; checksum: string; problem: BlockProblem; detail: string; backups: string[] }[];
  /** Unreferenced .blk objects in the checked pools whose every cfg was read (garbage; harmless). */
  unreferencedBlocks: number;
  unreferencedKeys: string[];
  /**
   * Unreferenced .blk objects in pools where a cfg could not be read: they
   * may belong to that backup (its only copy). Never garbage; damage.
   */
  ownerUnknownBlocks: number;
  ownerUnknownKeys: string[];
  checkedBlocks: number;
  fetchedBytes: number;
  damaged: boolean;
}

export interface VerifySelection {
  volume?: string;
  backup?: string;
  backingImage?: string;
}

interface Target {
  out: VerifiedBackup;
  map: BlockMap;
  ref(i: number): BlockRef;
}

/** Verifies the chosen backups (all, one volume's, or one). `progress(done, total)` after each block. */
export async function verifyTarget(cat: BackupstoreCatalog, sel: VerifySelection,
  progress?: (done: number, total: number) => void): Promise<VerifyReport> {
  const vols = cat.volumes.filter((v) => sel.volume === undefined || v.name === sel.volume);
  if (sel.volume !== undefined && vols.length === 0) throw new ChainfsError(cat.label, `no volume named ${sel.volume}${choices(cat.volumes.map((v) => v.name))}`);
  const out: VerifiedBackup[] = [];
  const targets: Target[] = [];
  /** `complete`: every cfg that may reference the pool's blocks was read. */
  const pools: { pool: string; referenced: Set<string>; complete: boolean }[] = [];
  const onlyBi = sel.backingImage !== undefined && sel.volume === undefined && sel.backup === undefined;
  if (!onlyBi) {
    for (const v of vols) {
      const referenced = new Set<string>();
      const pool = volumeBlocksDir(v.name);
      let complete = v.cfg !== undefined;
      for (const b of v.backups) {
        const chosen = sel.backup === undefined || b.name === sel.backup;
        // Its blocks count as referenced even when the volume is unusable (a broken volume.cfg holds no blocks).
        const t = await backupTarget(cat, b, pool, v.cfg?.size);
        if (t instanceof ChainfsError) complete = false;
        else if (t) forEachKey(t, (k) => referenced.add(k));
        else if (!b.cfg || b.damaged) complete = false;
        if (!chosen) continue;
        if (t instanceof ChainfsError) out.push(unusable(b, t.message));
        else if (t && v.cfg) targets.push(t);
        else out.push(unusable(b));
      }
      if (sel.backup === undefined) pools.push({ pool, referenced, complete });
    }
    if (sel.backup !== undefined && !vols.some((v) => v.backups.some((b) => b.name === sel.backup))) {
      throw new ChainfsError(cat.label, `no backup named ${sel.backup}${sel.volume ? ` in volume ${sel.volume}` : ''}${choices(vols.flatMap((v) => v.backups.map((b) => b.name)))}`);
    }
  }
  const bis = cat.backingImages.filter((bi) => (sel.backingImage !== undefined ? bi.name === sel.backingImage
    : sel.backup === undefined && (sel.volume === undefined || vols.some((v) => v.cfg?.backingImageName === bi.name))));
  const biReferenced = new Set<string>();
  let biComplete = true;
  for (const bi of bis) {
    const t = await backingImageTarget(cat, bi);
    if (t instanceof ChainfsError) {
      biComplete = false;
      out.push({ volume: null, name: bi.name, kind: 'backing-image', state: 'damaged', blocks: bi.cfg?.blockCount ?? 0, badBlocks: [], problem: t.message });
    } else if (t) {
      targets.push(t);
      forEachKey(t, (k) => biReferenced.add(k));
    } else {
      if (!bi.cfg || bi.damaged) biComplete = false;
      out.push({
        volume: null, name: bi.name, kind: 'backing-image', blocks: bi.cfg?.blockCount ?? 0, badBlocks: [], problem: bi.problem,
        state: !bi.cfg ? 'unreadable' : bi.damaged ? 'damaged' : 'in progress or failed',
      });
    }
  }
  // Every backing image of the target checked: its shared pool's garbage can be counted.
  if (sel.volume === undefined && sel.backup === undefined && sel.backingImage === undefined && cat.backingImages.length > 0) {
    pools.push({ pool: BACKING_IMAGE_BLOCKS, referenced: biReferenced, complete: biComplete });
  }
  const badObjects = await checkBlocks(cat, targets, progress);
  out.unshift(...targets.map((t) => t.out));
  const unreferencedKeys: string[] = [];
  const ownerUnknownKeys: string[] = [];
  for (const p of pools) {
    for (const key of await cat.target.listAll(p.pool)) {
      const m = /([0-9a-f]{64})\.blk$/.exec(key);
      if (m && CHECKSUM_RE.test(m[1]) && !p.referenced.has(key)) (p.complete ? unreferencedKeys : ownerUnknownKeys).push(key);
    }
  }
  return {
    target: cat.label,
    backups: out,
    badObjects,
    unreferencedBlocks: unreferencedKeys.length,
    unreferencedKeys,
    ownerUnknownBlocks: ownerUnknownKeys.length,
    ownerUnknownKeys,
    checkedBlocks: new Set(targets.flatMap((t) => keysOf(t))).size,
    fetchedBytes: cat.store.stats.fetchedBytes,
    // A cfg that cannot be read is a backup lost as surely as a bad block; an in-progress one is not damage.
    // Blocks of unknown owner may be a lost backup's only copy: damage until that cfg is repaired.
    damaged: out.some((b) => b.state === 'damaged' || b.state === 'unreadable') || ownerUnknownKeys.length > 0,
  };
}

/** A backup not checked: its cfg unreadable or damaged (`problem`, else the listing's), in progress, or its volume unusable. */
function unusable(b: BackupEntry, problem?: string): VerifiedBackup {
  return {
    volume: b.volume, name: b.name, kind: 'backup', blocks: b.cfg?.blockCount ?? 0, badBlocks: [], problem: problem ?? b.problem,
    state: !b.cfg ? 'unreadable' : problem !== undefined || b.damaged ? 'damaged' : b.cfg.createdTime === '' ? 'in progress or failed' : 'unreadable',
  };
}

/**
 * The blocks of a backup to check; undefined when its cfg was not read or
 * is in progress, a ChainfsError when its block list is damaged (a large
 * cfg, listed from its head, is first parsed whole here).
 */
async function backupTarget(cat: BackupstoreCatalog, b: BackupEntry, pool: string, volumeSize?: number): Promise<Target | ChainfsError | undefined> {
  if (!b.cfg || b.cfg.createdTime === '' || b.damaged) return undefined;
  const cfg = b.cfg;
  let map: BlockMap;
  try {
    map = parseBlocks(cat.target.where(b.cfgKey), await cat.cfgText(b), cfg.blockSize, volumeSize);
  } catch (e) {
    if (e instanceof ChainfsError) return e;
    throw e;
  }
  return {
    out: { volume: b.volume, name: b.name, kind: 'backup', state: 'complete', blocks: map.length, badBlocks: [] },
    map,
    ref: (i) => {
      const checksum = map.checksum(i);
      return { key: blockKey(pool, checksum), checksum, compression: cfg.compression, blockSize: map.blockSize, exact: true };
    },
  };
}

async function backingImageTarget(cat: BackupstoreCatalog, bi: BackingImageEntry): Promise<Target | ChainfsError | undefined> {
  if (!bi.cfg || bi.problem) return undefined;
  const cfg = bi.cfg;
  let map: BlockMap;
  try {
    map = parseBlocks(cat.target.where(bi.cfgKey), await cat.cfgText(bi), DEFAULT_BLOCK_SIZE, cfg.size || undefined);
  } catch (e) {
    if (e instanceof ChainfsError) return e;
    throw e;
  }
  return {
    out: { volume: null, name: bi.name, kind: 'backing-image', state: 'complete', blocks: map.length, badBlocks: [] },
    map,
    ref: (i) => {
      const checksum = map.checksum(i);
      return { key: blockKey(BACKING_IMAGE_BLOCKS, checksum), checksum, compression: cfg.compression, blockSize: map.blockSize, exact: false };
    },
  };
}

function keysOf(t: Target): string[] {
  const keys: string[] = [];
  forEachKey(t, (k) => keys.push(k));
  return keys;
}

function forEachKey(t: Target, fn: (key: string) => void): void {
  for (let i = 0; i < t.map.length; i++) fn(t.ref(i).key);
}

/** Checks every distinct block once; records each bad one on every backup and offset that uses it. */
async function checkBlocks(cat: BackupstoreCatalog, targets: Target[], progress?: (done: number, total: number) => void) {
  const users = new Map<string, { ref: BlockRef; uses: { t: Target; offset: number }[] }>();
  for (const t of targets) {
    for (let i = 0; i < t.map.length; i++) {
      const ref = t.ref(i);
      let u = users.get(ref.key);
      if (!u) users.set(ref.key, (u = { ref, uses: [] }));
      u.uses.push({ t, offset: t.map.offset(i) });
    }
  }
  const all = [...users.values()];
  let done = 0;
  const badObjects: VerifyReport['badObjects'] = [];
  await mapLimit(all, cat.store.jobs, async (u) => {
    try {
      await cat.store.check(u.ref);
    } catch (e) {
      const bad = e as BadBlock;
      if (bad.problem === undefined) throw e;
      const names = new Set<string>();
      for (const use of u.uses) {
        use.t.out.badBlocks.push({ offset: use.offset, checksum: u.ref.checksum, problem: bad.problem, detail: bad.message });
        use.t.out.state = 'damaged';
        names.add(use.t.out.volume ? `${use.t.out.volume}/${use.t.out.name}` : `backing image ${use.t.out.name}`);
      }
      badObjects.push({ key: cat.target.where(u.ref.key), checksum: u.ref.checksum, problem: bad.problem, detail: bad.message, backups: [...names] });
    }
    progress?.(++done, all.length);
  });
  for (const t of targets) t.out.badBlocks.sort((a, b) => a.offset - b.offset);
  return badObjects;
}

/**
 * What a view holds, told cheaply for `inspect`: its first MiB is copied
 * into a sparse temporary file of the view's size (nothing else is read),
 * and `blkid -p` (util-linux's low-level probe: superblock magic, not a
 * table of our own) names the partition table or the file system and its
 * label; with a table, `partx` lists the partitions and each one's first
 * MiB is probed at its offset (`blkid -p -O`). Remote views (backup
 * blocks: `layer.asyncOnly`) and views that cannot be opened are not
 * probed; nor are views past PROBE_LIMIT. A view whose first MiB is all
 * zeros is not given to blkid (no signature is made of zeros), and views
 * with the same size and first MiB share one probe. Cost: an open and a
 * 1 MiB read a view, and one blkid start per distinct first MiB (~3 ms),
 * so at most ~0.1 s for a node of 500 replicas; `inspect --no-contents`
 * skips it.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { CatalogView, OpenedView } from '../source/catalog';
import { formatBytes } from '../units';

/** Bytes probed: partition tables (MBR, GPT's header and entries) and superblocks (ext4 at 1 KiB, XFS at 0, btrfs at 64 KiB) lie within. */
const PROBE_BYTES = 1 << 20;
/** Views probed per run at most. */
export const PROBE_LIMIT = 32;
/** Partitions probed per view at most. */
const MAX_PARTITIONS = 16;

/** A file system (or other content) blkid recognised: type, label, UUID (null when unknown). */
export interface Probed {
  /** File system (or other content) type (`ext4`, `xfs`, `swap`, `crypto_LUKS`), or null. */
  type: string | null;
  label: string | null;
  uuid: string | null;
}

/** A partition of a view's partition table and what its first MiB holds. */
export interface PartitionContents extends Probed {
  /** Its number in the table (1-based, as partx says it). */
  number: number;
  /** Offset of its first byte in the view. */
  offset: number;
  /** Its size in bytes. */
  size: number;
}

/** What blkid found in a view's first MiB; all null when it recognised nothing. */
export interface ViewContents {
  /** The view's path in the catalog. */
  view: string;
  /** Partition table type (`dos`, `gpt`), or null. */
  ptType: string | null;
  /** The table's partitions (at most MAX_PARTITIONS), each probed at its offset; [] without a table. */
  partitions: PartitionContents[];
  /** File system (or other content) type (`ext4`, `xfs`, `swap`, `crypto_LUKS`), or null. */
  type: string | null;
  /** Its label, or null. */
  label: string | null;
  /** Its UUID, or null. */
  uuid: string | null;
}

/** Whether blkid can be run here (util-linux is on every Debian; a minimal image may lack it): looked up on PATH, no process started. */
export function haveBlkid(): boolean {
  for (const dir of (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':')) {
    try {
      fs.accessSync(path.join(dir || '.', 'blkid'), fs.constants.X_OK);
      return true;
    } catch {
      // not in this directory
    }
  }
  return false;
}

/** Kinds probed first: a volume's snapshots usually hold what its head holds. */
const FIRST_KINDS = new Set(['head', 'volume', 'backing-image', 'lvol']);

/**
 * Probes the probable views (local layers, open cleanly, non-empty), heads,
 * volumes and backing images before snapshots and backups, PROBE_LIMIT at
 * most; the others are left out of the result. One shell runs blkid on
 * every copied head (a process start per view costs more than the probe).
 */
export async function probeViews(views: CatalogView[]): Promise<ViewContents[]> {
  const candidates = views.filter((x) => !x.problem && x.size > 0);
  const ordered = [...candidates.filter((v) => FIRST_KINDS.has(v.kind)), ...candidates.filter((v) => !FIRST_KINDS.has(v.kind))];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-probe-'));
  try {
    // Views whose first MiB is all zeros hold nothing blkid could name; views
    // with the same first MiB and size (a snapshot and the head above it
    // that did not write there) get one probe between them.
    const heads = new Map<CatalogView, Buffer>();
    const firstOf: Array<{ size: number; head: Buffer; file: string }> = [];
    const copied: Array<{ view: CatalogView; file: string }> = [];
    const zeros = Buffer.alloc(PROBE_BYTES);
    for (const v of ordered.slice(0, PROBE_LIMIT)) {
      const head = await readViewHead(v);
      if (!head) continue;
      heads.set(v, head);
      if (head.equals(zeros.subarray(0, head.length))) continue;
      const same = firstOf.find((f) => f.size === v.size && f.head.equals(head));
      if (same) {
        copied.push({ view: v, file: same.file });
        continue;
      }
      const file = path.join(dir, String(firstOf.length));
      const fd = fs.openSync(file, 'w', 0o600);
      try {
        fs.ftruncateSync(fd, v.size); // sparse: size checks (GPT's last LBA) see the real size
        fs.writeSync(fd, head, 0, head.length, 0);
      } finally {
        fs.closeSync(fd);
      }
      firstOf.push({ size: v.size, head, file });
      copied.push({ view: v, file });
    }
    const found = blkidAll(firstOf.map((c) => c.file));
    const out: ViewContents[] = [];
    for (const v of heads.keys()) {
      const file = copied.find((c) => c.view === v)?.file;
      const whole = (file && found.get(file)) || { ptType: null, type: null, label: null, uuid: null };
      // Each view's own partitions: the same table may lead to different data past the first MiB.
      const partitions = whole.ptType && file ? await probePartitions(v, file) : [];
      out.push({ view: v.path, ptType: whole.ptType, partitions, ...pick(whole) });
    }
    return out;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Rare: a view with a partition table; the partitions' first MiB are copied into `file` and probed one by one. */
async function probePartitions(v: CatalogView, file: string): Promise<PartitionContents[]> {
  const partitions: PartitionContents[] = [];
  const opened = await openOrNothing(v);
  if (!opened) return partitions;
  try {
    const fd = fs.openSync(file, 'r+');
    try {
      for (const p of partx(file).slice(0, MAX_PARTITIONS)) {
        await copyHead(opened.chain, fd, p.offset, false, p.size);
        partitions.push({ ...p, ...pick(blkid(file, p.offset)) });
      }
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    // a read error is the view's own problem, reported elsewhere
  } finally {
    opened.close();
  }
  return partitions;
}

/** The view opened, or undefined when it cannot be (inspect's report already says why). */
async function openOrNothing(v: CatalogView): Promise<OpenedView | undefined> {
  try {
    return await v.open({});
  } catch {
    return undefined;
  }
}

/** A local view's first MiB (less for a smaller view); undefined when it is remote or cannot be read. */
async function readViewHead(v: CatalogView): Promise<Buffer | undefined> {
  const opened = await openOrNothing(v);
  if (!opened) return undefined;
  try {
    if (opened.chain.layers.some((l) => l.asyncOnly)) return undefined; // remote: not cheap
    const buf = Buffer.alloc(Math.min(PROBE_BYTES, opened.chain.size));
    opened.chain.read(buf, 0, buf.length, 0);
    return buf;
  } catch {
    return undefined; // a read error is the view's own problem, reported elsewhere
  } finally {
    opened.close();
  }
}

/** `blkid -p -o export` of each file, run by one shell (blkid stops at the first file it finds nothing in). */
function blkidAll(files: string[]): Map<string, Probed & { ptType: string | null }> {
  const out = new Map<string, Probed & { ptType: string | null }>();
  if (files.length === 0) return out;
  const script = 'for f do printf "@@%s\\n" "$f"; blkid -p -o export "$f"; done';
  const r = spawnSync('sh', ['-c', script, 'sh', ...files], { encoding: 'utf8', timeout: 30_000 });
  for (const block of (r.stdout ?? '').split(/^@@/m).slice(1)) {
    const nl = block.indexOf('\n');
    out.set(block.slice(0, nl), parseExport(block.slice(nl + 1)));
  }
  return out;
}

function parseExport(text: string): Probed & { ptType: string | null } {
  const kv = new Map<string, string>();
  for (const line of text.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) kv.set(line.slice(0, eq), line.slice(eq + 1));
  }
  return { ptType: kv.get('PTTYPE') ?? null, type: kv.get('TYPE') ?? null, label: kv.get('LABEL') ?? null, uuid: kv.get('UUID') ?? null };
}

/**
 * Probes one view: undefined when it cannot be opened or read, or is
 * remote (unless `remote`: `mount --files` reads a backup's first MiB too).
 */
export async function probeView(v: CatalogView, tmpFile: string, remote = false): Promise<ViewContents | undefined> {
  const opened = await openOrNothing(v);
  if (!opened) return undefined;
  try {
    const chain = opened.chain;
    const isRemote = chain.layers.some((l) => l.asyncOnly);
    if (isRemote && !remote) return undefined; // remote: not cheap
    const fd = fs.openSync(tmpFile, 'w', 0o600);
    try {
      fs.ftruncateSync(fd, chain.size); // sparse: size checks (GPT's last LBA) see the real size
      await copyHead(chain, fd, 0, isRemote);
      const whole = blkid(tmpFile);
      const partitions: PartitionContents[] = [];
      if (whole.ptType) {
        for (const p of partx(tmpFile).slice(0, MAX_PARTITIONS)) {
          await copyHead(chain, fd, p.offset, isRemote, p.size);
          partitions.push({ ...p, ...pick(blkid(tmpFile, p.offset)) });
        }
      }
      return { view: v.path, ptType: whole.ptType, partitions, ...pick(whole) };
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return undefined; // a read error is the view's own problem, reported elsewhere
  } finally {
    opened.close();
  }
}

function pick(p: Probed): Probed {
  return { type: p.type, label: p.label, uuid: p.uuid };
}

/** Copies the first MiB (at most `limit` bytes) of the view from `offset` into the same place of `fd`. */
async function copyHead(chain: import('../chain/chain').Chain, fd: number, offset: number, remote: boolean, limit = Infinity): Promise<void> {
  const n = Math.max(0, Math.min(PROBE_BYTES, chain.size - offset, limit));
  if (n === 0) return;
  const buf = Buffer.alloc(n);
  if (remote) await chain.readAsync(buf, 0, n, offset);
  else chain.read(buf, 0, n, offset);
  fs.writeSync(fd, buf, 0, n, offset);
}

/** `blkid -p [-O offset] -o export FILE`, parsed (exit 2: nothing found). */
function blkid(file: string, offset?: number): Probed & { ptType: string | null } {
  const args = ['-p', ...(offset ? ['-O', String(offset)] : []), '-o', 'export', file];
  return parseExport(spawnSync('blkid', args, { encoding: 'utf8', timeout: 10_000 }).stdout ?? '');
}

/** The partitions of the table in `file`, by util-linux's partx (sectors of 512 bytes). */
function partx(file: string): Array<{ number: number; offset: number; size: number }> {
  const r = spawnSync('partx', ['-g', '-r', '-b', '-o', 'NR,START,SIZE', file], { encoding: 'utf8', timeout: 10_000 });
  const out: Array<{ number: number; offset: number; size: number }> = [];
  for (const line of (r.stdout ?? '').split('\n')) {
    const [nr, start, size] = line.trim().split(/\s+/).map(Number);
    if (Number.isInteger(nr) && Number.isInteger(start) && Number.isInteger(size)) out.push({ number: nr, offset: start * 512, size });
  }
  return out;
}

/** One line for a view's contents: `ext4 "data" (uuid ...)`, `dos partition table: 1: ext4 "boot" at 1.0 MiB`, `nothing recognised`. */
export function describeContents(c: ViewContents): string {
  if (c.ptType) {
    const parts = c.partitions.map((p) => `${p.number}: ${describeProbed(p) || 'unknown'} at ${formatBytes(p.offset)}`);
    return `${c.ptType} partition table${parts.length ? `: ${parts.join('; ')}` : ''}`;
  }
  return describeProbed(c) || 'nothing recognised in the first MiB';
}

function describeProbed(p: Probed): string {
  return p.type ? `${p.type}${p.label ? ` "${p.label}"` : ''}${p.uuid ? ` (uuid ${p.uuid})` : ''}` : '';
}

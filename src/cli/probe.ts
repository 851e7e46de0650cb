/**
 * What a view holds, told cheaply for `inspect`: its first MiB is copied
 * into a sparse temporary file of the view's size (nothing else is read),
 * and `blkid -p` (util-linux's low-level probe: superblock magic, not a
 * table of our own) names the partition table or the file system and its
 * label. Remote views (backup blocks: `layer.asyncOnly`) and views that
 * cannot be opened are not probed; nor are views past PROBE_LIMIT (a node
 * of 500 replicas would pay 500 probes, ~5 ms each).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { CatalogView } from '../source/catalog';

/** Bytes probed: partition tables (MBR, GPT's header and entries) and superblocks (ext4 at 1 KiB, XFS at 0, btrfs at 64 KiB) lie within. */
const PROBE_BYTES = 1 << 20;
/** Views probed per run at most. */
export const PROBE_LIMIT = 64;

/** What blkid found in a view's first MiB; all null when it recognised nothing. */
export interface ViewContents {
  /** The view's path in the catalog. */
  view: string;
  /** Partition table type (`dos`, `gpt`), or null. */
  ptType: string | null;
  /** File system (or other content) type (`ext4`, `xfs`, `swap`, `crypto_LUKS`), or null. */
  type: string | null;
  /** Its label, or null. */
  label: string | null;
  /** Its UUID, or null. */
  uuid: string | null;
}

/** Whether blkid can be run here (util-linux is on every Debian; a minimal image may lack it). */
export function haveBlkid(): boolean {
  const r = spawnSync('blkid', ['-V'], { stdio: 'ignore' });
  return !r.error;
}

/**
 * Probes each probable view (local layers, opens cleanly, non-empty),
 * the first PROBE_LIMIT of them; the others are left out of the result.
 */
export async function probeViews(views: CatalogView[]): Promise<ViewContents[]> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-probe-'));
  const out: ViewContents[] = [];
  try {
    for (const v of views.filter((x) => !x.problem && x.size > 0).slice(0, PROBE_LIMIT)) {
      const c = await probeView(v, path.join(dir, 'head'));
      if (c) out.push(c);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return out;
}

async function probeView(v: CatalogView, tmpFile: string): Promise<ViewContents | undefined> {
  let opened;
  try {
    opened = await v.open({});
  } catch {
    return undefined; // inspect's report already says why
  }
  try {
    if (opened.chain.layers.some((l) => l.asyncOnly)) return undefined; // remote: not cheap
    const n = Math.min(PROBE_BYTES, opened.chain.size);
    const buf = Buffer.alloc(n);
    opened.chain.read(buf, 0, n, 0);
    const fd = fs.openSync(tmpFile, 'w', 0o600);
    try {
      fs.writeSync(fd, buf, 0, n, 0);
      fs.ftruncateSync(fd, opened.chain.size); // sparse: size checks (GPT's last LBA) see the real size
    } finally {
      fs.closeSync(fd);
    }
    return { view: v.path, ...blkid(tmpFile) };
  } catch {
    return undefined; // a read error is the view's own problem, reported elsewhere
  } finally {
    opened.close();
  }
}

/** `blkid -p -o export FILE`, parsed (exit 2: nothing found). */
function blkid(file: string): Omit<ViewContents, 'view'> {
  const r = spawnSync('blkid', ['-p', '-o', 'export', file], { encoding: 'utf8', timeout: 10_000 });
  const kv = new Map<string, string>();
  for (const line of (r.stdout ?? '').split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) kv.set(line.slice(0, eq), line.slice(eq + 1));
  }
  return { ptType: kv.get('PTTYPE') ?? null, type: kv.get('TYPE') ?? null, label: kv.get('LABEL') ?? null, uuid: kv.get('UUID') ?? null };
}

/** One line for a view's contents: `ext4 "data" (uuid ...)`, `gpt partition table`, `not recognised`. */
export function describeContents(c: ViewContents): string {
  const parts: string[] = [];
  if (c.ptType) parts.push(`${c.ptType} partition table`);
  if (c.type) parts.push(`${c.type}${c.label ? ` "${c.label}"` : ''}${c.uuid ? ` (uuid ${c.uuid})` : ''}`);
  return parts.join(', ') || 'nothing recognised in the first MiB';
}

/**
 * The layered block cache of a backup target: every block read goes
 * memory (lru-cache) → on-disk cache (optional) → the target, and is
 * verified before it is cached or served.
 *
 * Blocks are keyed by their object key (`<pool>/AA/BB/<checksum>.blk`), so a
 * block shared by several backups of a volume (the same checksum in one
 * pool) is fetched once, and two readers asking for it at the same time wait
 * on one request. At most `jobs` fetches run at once; the rest queue.
 *
 * Memory: the decompressed blocks in the LRU, bounded by `cacheBytes`
 * (2 MiB a block), plus at most `jobs` blocks in flight.
 * The on-disk cache holds plain blocks named by checksum
 * (`<dir>/AA/<checksum>.<blockSize>`): content-addressed, so it is shared
 * by every volume and target; each file is checksummed again when reused,
 * and the least recently used are removed past its bound.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LRUCache } from 'lru-cache';
import type { Compression } from './cfg';
import { BadBlock, checksumOf, decodeBlock } from './block-codec';
import { DecodeError, codecPool } from './codec-pool';
import { TargetMissing, type BackupTarget } from './target';

export interface BlockStoreOptions {
  /** Parallel fetches (--jobs). */
  jobs: number;
  /** Budget of decompressed blocks kept in memory, bytes. */
  cacheBytes: number;
  /** Directory of the on-disk cache (--cache-dir), or none. */
  cacheDir?: string;
  /**
   * Bound of the on-disk cache, bytes: the least recently used files go
   * first. Default: 10 GiB, or half the space free when it opens if less.
   */
  cacheDirBytes?: number;
}

const DEFAULT_DISK_CACHE_BYTES = 10 * 1024 ** 3;

/** What a block is, to fetch it. */
export interface BlockRef {
  /** Object key of the .blk. */
  key: string;
  checksum: string;
  compression: Compression;
  blockSize: number;
  /** False for a backing image (its last block may be short). */
  exact: boolean;
}

export interface BlockStoreStats {
  /** Objects fetched from the target. */
  fetched: number;
  /** Their stored (compressed) bytes. */
  fetchedBytes: number;
  memoryHits: number;
  diskHits: number;
}

export class BlockStore {
  readonly jobs: number;
  readonly stats: BlockStoreStats = { fetched: 0, fetchedBytes: 0, memoryHits: 0, diskHits: 0 };
  private readonly target: BackupTarget;
  private readonly memory: LRUCache<string, Buffer>;
  private readonly inFlight = new Map<string, Promise<Buffer>>();
  private readonly cacheDir?: string;
  private readonly cacheDirBytes?: number;
  /** The on-disk cache's files (path → size, last use), scanned on first use. */
  private disk?: { bytes: number; files: Map<string, { size: number; used: number }> };
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(target: BackupTarget, opts: BlockStoreOptions) {
    this.target = target;
    this.jobs = Math.max(1, opts.jobs);
    this.cacheDir = opts.cacheDir;
    this.cacheDirBytes = opts.cacheDirBytes;
    this.memory = new LRUCache<string, Buffer>({
      maxSize: Math.max(opts.cacheBytes, 4 << 20),
      sizeCalculation: (b) => Math.max(b.length, 1),
    });
  }

  /** The block's plain bytes if they are in memory now (no request, no wait). */
  peek(ref: BlockRef): Buffer | undefined {
    const b = this.memory.get(ref.key);
    if (b) this.stats.memoryHits++;
    return b;
  }

  /** The block's verified plain bytes. Throws BadBlock. */
  get(ref: BlockRef): Promise<Buffer> {
    const hit = this.peek(ref);
    if (hit) return Promise.resolve(hit);
    let p = this.inFlight.get(ref.key);
    if (!p) {
      p = this.limited(() => this.load(ref)).finally(() => this.inFlight.delete(ref.key));
      this.inFlight.set(ref.key, p);
    }
    return p;
  }

  /**
   * Fetches and verifies a block without keeping it (verify: every block
   * once, no cache churn). Shares a fetch already in flight. Throws BadBlock.
   */
  async check(ref: BlockRef): Promise<void> {
    if (this.memory.has(ref.key)) return;
    const p = this.inFlight.get(ref.key);
    if (p) {
      await p;
      return;
    }
    await this.limited(() => this.load(ref, false));
  }

  /** Whether the block is in memory or on its way. */
  has(ref: BlockRef): boolean {
    return this.memory.has(ref.key) || this.inFlight.has(ref.key);
  }

  private async load(ref: BlockRef, keep = true): Promise<Buffer> {
    const fromDisk = keep ? await this.readDiskCache(ref) : undefined;
    if (fromDisk) {
      this.stats.diskHits++;
      this.memory.set(ref.key, fromDisk);
      return fromDisk;
    }
    let raw: Buffer;
    try {
      raw = await this.target.get(ref.key);
    } catch (e) {
      if (e instanceof TargetMissing) throw new BadBlock('missing', `${this.target.where(ref.key)} does not exist`);
      throw new BadBlock('unreadable', (e as Error).message);
    }
    this.stats.fetched++;
    this.stats.fetchedBytes += raw.length;
    const plain = await this.decode(raw, ref, keep);
    if (keep) {
      this.memory.set(ref.key, plain);
      this.writeDiskCache(ref, plain);
    }
    return plain;
  }

  /**
   * The block's verified plain bytes. A kept block is decoded once as the
   * backup's method with its raw bytes lent to the codec worker (moved
   * there and back, not copied); anything but the right size and checksum
   * goes to decodeBlock, which tries what Longhorn tries and says what is
   * wrong. Throws BadBlock.
   */
  private async decode(raw: Buffer, ref: BlockRef, keep: boolean): Promise<Buffer> {
    if (!keep || ref.compression === 'none') return decodeBlock(raw, ref.compression, ref.checksum, ref.blockSize, ref.exact, keep);
    let back: Buffer | undefined;
    try {
      const d = await codecPool().run(raw, ref.compression, true, true, ref.blockSize + 1, true);
      if ((ref.exact ? d.length === ref.blockSize : d.length <= ref.blockSize) && d.sum === ref.checksum) return d.plain;
      back = d.raw;
    } catch (e) {
      if (!(e instanceof DecodeError)) throw e;
      back = e.raw;
    }
    return decodeBlock(back ?? raw, ref.compression, ref.checksum, ref.blockSize, ref.exact, keep);
  }

  private async limited<T>(fn: () => Promise<T>): Promise<T> {
    if (this.running >= this.jobs) await new Promise<void>((r) => this.waiting.push(r));
    this.running++;
    try {
      return await fn();
    } finally {
      this.running--;
      this.waiting.shift()?.();
    }
  }

  private diskPath(ref: BlockRef): string | undefined {
    return this.cacheDir && path.join(this.cacheDir, ref.checksum.slice(0, 2), `${ref.checksum}.${ref.blockSize}`);
  }

  /** A cached plain block, if present and still matching its checksum (a bad one is dropped). */
  private async readDiskCache(ref: BlockRef): Promise<Buffer | undefined> {
    const file = this.diskPath(ref);
    if (!file) return undefined;
    let buf: Buffer;
    try {
      buf = await fs.promises.readFile(file);
    } catch {
      return undefined;
    }
    if (buf.length <= ref.blockSize && (await checksumOf(buf)) === ref.checksum) {
      const e = this.diskIndex().files.get(file);
      if (e) e.used = Date.now();
      const now = new Date();
      fs.promises.utimes(file, now, now).catch(() => undefined); // the next run's LRU order
      return buf;
    }
    await fs.promises.rm(file, { force: true });
    this.forget(file);
    return undefined;
  }

  /** The cache's files, from one scan of its directory (AA/ subdirectories). */
  private diskIndex(): { bytes: number; files: Map<string, { size: number; used: number }> } {
    if (this.disk) return this.disk;
    const files = new Map<string, { size: number; used: number }>();
    let bytes = 0;
    const dir = this.cacheDir!;
    for (const sub of safeReaddir(dir)) {
      for (const f of safeReaddir(path.join(dir, sub))) {
        const file = path.join(dir, sub, f);
        try {
          const st = fs.statSync(file);
          if (!st.isFile()) continue;
          files.set(file, { size: st.size, used: st.mtimeMs });
          bytes += st.size;
        } catch {
          // gone meanwhile
        }
      }
    }
    this.disk = { bytes, files };
    return this.disk;
  }

  private forget(file: string): void {
    const e = this.disk?.files.get(file);
    if (!e) return;
    this.disk!.bytes -= e.size;
    this.disk!.files.delete(file);
  }

  /** The bound: given, or 10 GiB, or half the space free now if that is less. */
  private diskLimit(): number {
    if (this.cacheDirBytes !== undefined) return this.cacheDirBytes;
    try {
      const st = fs.statfsSync(this.cacheDir!);
      return Math.min(DEFAULT_DISK_CACHE_BYTES, Math.floor((st.bavail * st.bsize) / 2));
    } catch {
      return DEFAULT_DISK_CACHE_BYTES;
    }
  }

  /** Records a new cache file and removes the least recently used past the bound (down to 90% of it). */
  private added(file: string, size: number): void {
    const d = this.diskIndex();
    this.forget(file);
    d.files.set(file, { size, used: Date.now() });
    d.bytes += size;
    const limit = this.diskLimit();
    if (d.bytes <= limit) return;
    const oldest = [...d.files.entries()].sort((a, b) => a[1].used - b[1].used);
    for (const [f] of oldest) {
      if (d.bytes <= limit * 0.9 || f === file) break;
      fs.rmSync(f, { force: true });
      this.forget(f);
    }
  }

  /** Best effort (a full cache disk only costs a refetch later): temp file, then rename. */
  private writeDiskCache(ref: BlockRef, plain: Buffer): void {
    const file = this.diskPath(ref);
    if (!file) return;
    const tmp = `${file}.tmp.${process.pid}.${Date.now()}`;
    void (async () => {
      try {
        await fs.promises.mkdir(path.dirname(file), { recursive: true });
        await fs.promises.writeFile(tmp, plain);
        await fs.promises.rename(tmp, file);
        this.added(file, plain.length);
      } catch {
        await fs.promises.rm(tmp, { force: true }).catch(() => undefined);
      }
    })();
  }

  close(): void {
    this.memory.clear();
  }
}

function safeReaddir(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}

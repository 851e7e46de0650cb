/**
 * One block of a backup, from its stored bytes to its verified plain bytes,
 * exactly as Longhorn's `DecompressAndVerifyWithFallback` (backupstore
 * `util.go`, v1.6.2+): decompress with the backup's method; a gzip header
 * error retries as lz4 and an lz4 bad magic retries as gzip; then
 * hex(sha512(plain))[0:64] must equal the block's checksum.
 *
 * Decompression and hashing run on worker threads (codec-pool.ts); only the
 * choice of method and the comparisons happen here.
 */
import type { Compression } from './cfg';
import { DecodeError, codecPool, type Decoded } from './codec-pool';

const GZIP_MAGIC = Buffer.from([0x1f, 0x8b]);
const LZ4_MAGIC = Buffer.from([0x04, 0x22, 0x4d, 0x18]);

/** Why a block is bad, in verify's and the mount's words. */
export type BlockProblem =
  | 'missing' // the .blk object does not exist
  | 'corrupt' // it does not decompress (truncated, bit rot, a gzip CRC or lz4 frame checksum error)
  | 'checksum' // it decompresses, but sha512(plain) is not its name
  | 'size' // it decompresses to the wrong length
  | 'wrong-compression' // it is intact in a format Longhorn's restore would not try for this backup
  | 'unreadable'; // the read itself failed (I/O error, HTTP error after retries)

export class BadBlock extends Error {
  readonly problem: BlockProblem;
  constructor(problem: BlockProblem, detail: string) {
    super(detail);
    this.problem = problem;
  }
}

/** Human words for a problem. */
export function describeProblem(p: BlockProblem): string {
  switch (p) {
    case 'missing': return 'block file missing';
    case 'corrupt': return 'block does not decompress';
    case 'checksum': return 'checksum mismatch';
    case 'size': return 'wrong decompressed size';
    case 'wrong-compression': return 'stored in a compression Longhorn would not read for this backup';
    case 'unreadable': return 'cannot be read';
  }
}

/** Decodes as `method` and hashes, on a worker thread. Throws DecodeError when it does not decode. */
function decodeAs(raw: Buffer, method: Compression, keep: boolean, blockSize: number): Promise<Decoded> {
  // One byte more than a block: an overlong block decodes and is then refused by size.
  return codecPool().run(raw, method, true, keep, blockSize + 1);
}

/** hex(SHA-512(data))[0:64], computed off the main thread. */
export async function checksumOf(data: Buffer): Promise<string> {
  return (await codecPool().run(data, 'none', true, false)).sum;
}

/** The methods Longhorn tries for a block stored as `raw` in a backup using `method`. */
function longhornOrder(raw: Buffer, method: Compression): Compression[] {
  if (method === 'gzip' && !raw.subarray(0, 2).equals(GZIP_MAGIC)) return ['gzip', 'lz4'];
  if (method === 'lz4' && !raw.subarray(0, 4).equals(LZ4_MAGIC)) return ['lz4', 'gzip'];
  return [method];
}

function sniff(raw: Buffer): Compression {
  if (raw.subarray(0, 2).equals(GZIP_MAGIC)) return 'gzip';
  if (raw.subarray(0, 4).equals(LZ4_MAGIC)) return 'lz4';
  return 'none';
}

/**
 * The verified plain bytes of a block. `blockSize` is the exact plain length
 * (a volume block; a backing image's last block may be shorter: `exact`
 * false). Without `keep` only the verdict matters (verify): the result is
 * empty. Throws BadBlock.
 */
export async function decodeBlock(raw: Buffer, method: Compression, checksum: string, blockSize: number,
  exact = true, keep = true): Promise<Buffer> {
  let failure: BadBlock | undefined;
  for (const m of longhornOrder(raw, method)) {
    let decoded: Decoded;
    try {
      decoded = await decodeAs(raw, m, keep, blockSize);
    } catch (e) {
      if (!(e instanceof DecodeError)) throw e;
      failure ??= new BadBlock('corrupt', `does not decompress as ${m} (${e.message})`);
      continue;
    }
    try {
      return verify(decoded, checksum, blockSize, exact);
    } catch (e) {
      if (!(e instanceof BadBlock)) throw e;
      failure = e;
      break;
    }
  }
  // Longhorn would fail here. Tell bit rot from a block intact in another format.
  const other = sniff(raw);
  if (!longhornOrder(raw, method).includes(other)) {
    let intact = false;
    try {
      verify(await decodeAs(raw, other, false, blockSize), checksum, blockSize, exact);
      intact = true;
    } catch {
      // not that either
    }
    if (intact) throw new BadBlock('wrong-compression', `stored as ${other}, the backup says ${method}`);
  }
  throw failure ?? new BadBlock('corrupt', `does not decompress as ${method}`);
}

function verify({ plain, length, sum }: Decoded, checksum: string, blockSize: number, exact: boolean): Buffer {
  if (exact ? length !== blockSize : length > blockSize) {
    throw new BadBlock('size', `decompresses to ${length} bytes, not ${blockSize}`);
  }
  if (sum !== checksum) throw new BadBlock('checksum', `content checksum is ${sum}`);
  return plain;
}

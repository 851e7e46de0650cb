/**
 * Deterministic randomness for the workload: the same seed gives the same
 * extents and the same bytes on every machine. Positions come from sfc32
 * (a small, fast 32-bit generator); bytes come from AES-128-CTR over zeros,
 * which OpenSSL runs at GB/s (crypto.randomBytes cannot be seeded).
 */
import * as crypto from 'node:crypto';

/** sfc32, seeded from SHA-256 of (seed, stream): independent streams per layer. */
export class Prng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number, stream: string) {
    const h = crypto.createHash('sha256').update(`chainfs-bench:${seed}:${stream}`).digest();
    this.a = h.readUInt32LE(0);
    this.b = h.readUInt32LE(4);
    this.c = h.readUInt32LE(8);
    this.d = h.readUInt32LE(12);
    for (let i = 0; i < 16; i++) this.next();
  }

  /** A uniform 32-bit unsigned integer. */
  next(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** Uniform in [0, 1), 53 bits. */
  float(): number {
    return (this.next() * 2 ** 21 + (this.next() >>> 11)) / 2 ** 53;
  }

  /** Uniform integer in [0, n), n up to 2^53. */
  below(n: number): number {
    return Math.floor(this.float() * n);
  }
}

/** Zeros that AES-CTR encrypts into the data bytes; reused, never written. */
const ZEROS = Buffer.alloc(4 << 20);

/**
 * The bytes of one data extent: AES-128-CTR keyed by the seed, the counter
 * block starting at (stream, index, 0), so every extent has its own bytes
 * and none depends on the others' lengths. `length` at most 4 MiB.
 */
export function extentBytes(seed: number, stream: number, index: number, length: number): Buffer {
  if (length > ZEROS.length) throw new Error(`extent of ${length} bytes is longer than ${ZEROS.length}`);
  const key = crypto.createHash('sha256').update(`chainfs-bench-data:${seed}`).digest().subarray(0, 16);
  const iv = Buffer.alloc(16);
  iv.writeUInt32BE(stream, 0);
  iv.writeUInt32BE(index, 4);
  return crypto.createCipheriv('aes-128-ctr', key, iv).update(ZEROS.subarray(0, length));
}

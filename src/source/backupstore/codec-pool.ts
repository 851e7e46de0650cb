/**
 * Decompression and SHA-512 of backup blocks on worker threads, so that a
 * mount keeps serving while blocks are decoded. A job is one block: decode
 * it as one method (gzip: node zlib; lz4 frames: the reference liblz4's
 * LZ4F decoder compiled to WebAssembly, @foxglove/wasm-lz4, which checks the
 * frame's content checksum; none) and hash the result; the plain bytes come
 * back as a transferred ArrayBuffer (no copy). A caller that lends its raw
 * bytes (`lend`) has them transferred there and back instead of copied.
 *
 * Why this decoder and workers (measured on 2 MiB blocks of a 4 GiB lz4
 * backup): wasm liblz4 ~1.8 ms a block, lz4-napi 4.5 ms (sync) and lz4js
 * 4.1 ms; lz4-napi's async calls run on libuv's pool, where its bundled
 * mimalloc kept every thread's freed buffers (a 4 GiB export peaked at
 * 1.3 GB RSS with the CLI's 16 pool threads). The worker is an inline script
 * (it runs from the compiled CLI and from the TypeScript tests alike).
 *
 * Costs per 2 MiB block: lz4 ~2 ms, gzip ~9 ms, SHA-512 ~4 ms.
 */
import * as os from 'node:os';
import { Worker } from 'node:worker_threads';
import type { Compression } from './cfg';

const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const zlib = require('node:zlib');
const crypto = require('node:crypto');
let lz4;
let ready = Promise.resolve();
// @foxglove/wasm-lz4 keeps one LZ4F context for ever, and a context that
// failed once fails every later frame: after an error, load a fresh instance.
function loadLz4() {
  delete require.cache[workerData.lz4];
  lz4 = require(workerData.lz4);
  ready = lz4.isLoaded;
}
function handle(m) {
  // Lent raw bytes go back with the answer (transferred), unless they are the plain bytes themselves.
  const back = (plain) => (m.lend && (!plain || plain.buffer !== m.raw.buffer) ? m.raw : undefined);
  try {
    const raw = Buffer.from(m.raw.buffer, m.raw.byteOffset, m.raw.byteLength);
    let plain;
    if (m.method === 'gzip') plain = zlib.gunzipSync(raw);
    else if (m.method === 'lz4') {
      if (raw.length < 4 || raw.readUInt32LE(0) !== 0x184d2204) throw new Error('lz4: bad magic number');
      try {
        plain = lz4(raw, m.maxLength);
      } catch (e) {
        loadLz4();
        throw new Error('not a valid lz4 frame, or its content checksum does not match');
      }
    } else plain = raw;
    const sum = m.hash ? crypto.createHash('sha512').update(plain).digest('hex').slice(0, 64) : '';
    const rawBack = back(m.keep ? plain : undefined);
    if (!m.keep) {
      parentPort.postMessage({ id: m.id, length: plain.length, sum, raw: rawBack }, rawBack ? [rawBack.buffer] : []);
      return;
    }
    let out = plain.buffer;
    if (plain.byteOffset !== 0 || plain.byteLength !== out.byteLength) {
      out = new ArrayBuffer(plain.length);
      new Uint8Array(out).set(plain);
    }
    parentPort.postMessage({ id: m.id, plain: out, length: plain.length, sum, raw: rawBack }, rawBack ? [out, rawBack.buffer] : [out]);
  } catch (e) {
    const rawBack = back(undefined);
    parentPort.postMessage({ id: m.id, error: String((e && e.message) || e), raw: rawBack }, rawBack ? [rawBack.buffer] : []);
  }
}
loadLz4();
parentPort.on('message', (m) => {
  ready = ready.then(() => handle(m));
});
`;

/** A decoded block: its plain bytes (empty unless kept), their length and checksum; lent raw bytes, back. */
export interface Decoded {
  plain: Buffer;
  length: number;
  sum: string;
  raw?: Buffer;
}

interface Job {
  resolve(r: Decoded): void;
  reject(e: Error): void;
}

interface Reply {
  id: number;
  plain?: ArrayBuffer;
  length?: number;
  sum?: string;
  error?: string;
  raw?: Uint8Array;
}

/** A decode failed (the message is the decoder's, e.g. `ContentChecksumError`, `incorrect header check`); lent raw bytes, back. */
export class DecodeError extends Error {
  raw?: Buffer;
}

class CodecPool {
  private readonly workers: Worker[] = [];
  private readonly busy: number[] = [];
  private readonly jobs = new Map<number, Job>();
  private nextId = 1;
  private readonly size: number;

  constructor(size: number) {
    this.size = size;
  }

  /**
   * Decodes `raw` as `method` on a worker; with `hash`, also hex(sha512(plain))[0:64].
   * Without `keep` only the length and the sum come back (verify: no 2 MiB copy per block).
   * With `lend`, a `raw` that owns its whole ArrayBuffer is transferred rather than
   * copied: `raw` is empty (detached) afterwards, and the bytes come back as
   * `Decoded.raw` or `DecodeError.raw` (absent when they are the plain bytes:
   * method none). The export of a 1 GiB lz4 backup from S3 spent 0.5 s of its
   * reading thread in these copies.
   * Rejects with DecodeError.
   */
  run(raw: Uint8Array, method: Compression, hash: boolean, keep = true, maxLength = 0, lend = false): Promise<Decoded> {
    const owned = raw.byteOffset === 0 && raw.byteLength === raw.buffer.byteLength && raw.buffer instanceof ArrayBuffer;
    // A view into a larger buffer would be cloned whole: send only its bytes.
    if (!owned) raw = new Uint8Array(raw);
    const transfer = lend && owned;
    const w = this.pick();
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.jobs.set(id, { resolve, reject });
      this.busy[w]++;
      this.workers[w].ref();
      this.workers[w].postMessage({ id, raw, method, hash, keep, maxLength, lend: transfer }, transfer ? [raw.buffer as ArrayBuffer] : []);
    });
  }

  private pick(): number {
    let best = -1;
    for (let i = 0; i < this.workers.length; i++) if (best < 0 || this.busy[i] < this.busy[best]) best = i;
    if (this.workers.length < this.size && (best < 0 || this.busy[best] > 0)) return this.spawn();
    return best;
  }

  private spawn(): number {
    const i = this.workers.length;
    const w = new Worker(WORKER_SOURCE, { eval: true, workerData: { lz4: require.resolve('@foxglove/wasm-lz4') } });
    w.on('message', (r: Reply) => this.receive(i, r));
    w.on('error', (e) => {
      for (const [, j] of this.jobs) j.reject(e);
      this.jobs.clear();
    });
    w.unref();
    this.workers.push(w);
    this.busy.push(0);
    return i;
  }

  private receive(i: number, r: Reply): void {
    const job = this.jobs.get(r.id);
    this.jobs.delete(r.id);
    if (--this.busy[i] === 0) this.workers[i].unref(); // an idle pool does not keep the process alive
    if (!job) return;
    const raw = r.raw ? Buffer.from(r.raw.buffer, r.raw.byteOffset, r.raw.byteLength) : undefined;
    if (r.error !== undefined) job.reject(Object.assign(new DecodeError(r.error), { raw }));
    else job.resolve({ plain: r.plain ? Buffer.from(r.plain) : EMPTY, length: r.length ?? 0, sum: r.sum ?? '', raw });
  }
}

const EMPTY = Buffer.alloc(0);
let pool: CodecPool | undefined;

/** The process's codec pool: one worker per core, at most 4. */
export function codecPool(): CodecPool {
  pool ??= new CodecPool(Math.max(1, Math.min(4, os.availableParallelism())));
  return pool;
}

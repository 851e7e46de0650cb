/**
 * SHA-512 of an output on a worker thread, so hashing overlaps copying: the
 * copier fills one of a few transferable buffers, writes it out and hands it
 * to the worker, which hashes it and hands it back. A run of zeros is only a
 * length. Memory: RING buffers of CHUNK bytes (32 MiB), whatever the size.
 *
 * Bytes must be fed in file order (a hash has no random access). Runs on
 * compiled code only: the worker is the sibling `hash-worker.js`.
 */
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { ChainfsError } from '../errors';

/** Size of one transfer buffer. */
export const CHUNK = 4 << 20;
/** Buffers in the ring: enough that a copier held up a moment (a busy machine) does not leave the hash idle. */
const RING = 8;

export type ToHashWorker =
  | { t: 'data'; buf: ArrayBuffer; length: number }
  | { t: 'zeros'; length: number }
  | { t: 'file'; path: string }
  | { t: 'digest' };

type FromHashWorker =
  | { t: 'free'; buf: ArrayBuffer; hashed: number }
  | { t: 'hashed'; hashed: number }
  | { t: 'digest'; hex: string; hashed: number }
  | { t: 'fail'; message: string; code: string };

export class Sha512Worker {
  /** Bytes hashed so far (lags behind what was fed). */
  hashed = 0;
  /** Called whenever `hashed` moves. */
  onHashed: ((hashed: number) => void) | undefined;
  private readonly worker: Worker;
  private readonly free: Buffer[] = [];
  private bufferWaiter: (() => void) | null = null;
  private digestWaiter: ((hex: string) => void) | null = null;
  private failure: Error | null = null;
  private failureWaiter: ((e: Error) => void) | null = null;

  constructor() {
    this.worker = new Worker(path.join(__dirname, 'hash-worker.js'));
    for (let i = 0; i < RING; i++) this.free.push(Buffer.from(new ArrayBuffer(CHUNK)));
    this.worker.on('message', (m: FromHashWorker) => this.receive(m));
    this.worker.on('error', (e) => this.fail(e));
    this.worker.on('exit', (code) => this.fail(new Error(`hash worker exited with code ${code}`)));
  }

  /** A free CHUNK-byte buffer to fill; waits while all of them are being hashed. */
  async buffer(): Promise<Buffer> {
    for (;;) {
      this.check();
      const b = this.free.pop();
      if (b) return b;
      await this.wait((resolve) => { this.bufferWaiter = resolve; });
    }
  }

  /** Hashes buf[0, length). `buf` (from buffer()) is handed over: do not touch it afterwards. */
  update(buf: Buffer, length: number): void {
    this.check();
    const ab = buf.buffer as ArrayBuffer;
    if (buf.byteOffset !== 0 || buf.length !== ab.byteLength) throw new Error('Sha512Worker.update: not a buffer from buffer()');
    this.post({ t: 'data', buf: ab, length }, [ab]);
  }

  /** Hashes `length` zero bytes (a hole). */
  zeros(length: number): void {
    this.check();
    if (length > 0) this.post({ t: 'zeros', length });
  }

  /**
   * Hashes the whole content of the file at `path`, read by the worker
   * (a second read of an output that could not be hashed as it was written).
   */
  file(filePath: string): void {
    this.check();
    this.post({ t: 'file', path: filePath });
  }

  /** Lowercase hex SHA-512 of everything fed; the worker is then stopped. */
  async digest(): Promise<string> {
    this.check();
    this.post({ t: 'digest' });
    const hex = await this.wait<string>((resolve) => { this.digestWaiter = resolve; });
    await this.close();
    return hex;
  }

  async close(): Promise<void> {
    this.worker.removeAllListeners('exit');
    this.worker.removeAllListeners('error');
    this.worker.on('error', () => undefined);
    await this.worker.terminate();
  }

  private post(m: ToHashWorker, transfer: ArrayBuffer[] = []): void {
    this.worker.postMessage(m, transfer);
  }

  private receive(m: FromHashWorker): void {
    switch (m.t) {
      case 'free': {
        this.free.push(Buffer.from(m.buf));
        this.progress(m.hashed);
        const w = this.bufferWaiter;
        this.bufferWaiter = null;
        w?.();
        return;
      }
      case 'hashed':
        this.progress(m.hashed);
        return;
      case 'digest': {
        this.progress(m.hashed);
        const w = this.digestWaiter;
        this.digestWaiter = null;
        w?.(m.hex);
        return;
      }
      case 'fail':
        this.fail(new ChainfsError(undefined, `checksum: ${m.message}`, m.code));
    }
  }

  private progress(hashed: number): void {
    this.hashed = hashed;
    this.onHashed?.(hashed);
  }

  /** Waits for `arm`'s resolver to be called, or rejects on a worker failure. */
  private wait<T = void>(arm: (resolve: (v: T) => void) => void): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.failureWaiter = reject;
      arm((v: T) => {
        this.failureWaiter = null;
        resolve(v);
      });
    });
  }

  private fail(e: Error): void {
    if (this.failure) return;
    this.failure = e;
    const w = this.failureWaiter;
    this.failureWaiter = null;
    w?.(e);
  }

  private check(): void {
    if (this.failure) throw this.failure;
  }
}

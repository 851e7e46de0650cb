/**
 * Compare on worker threads: each span is described by where its bytes lie
 * (the layers' mapDirect pieces: fd, offset delta, file end; zeros), and a
 * worker reads and compares it on its own core (compare-worker.ts). Two
 * workers use both cores of a small machine; the JavaScript thread only
 * plans. A span with a piece only `read` can produce (a compressed qcow2
 * cluster, a remote backup block, a broken range) stays with the caller.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { ChainfsError } from '../errors';
import type { ImageSource } from './source';

/** fd of a piece that reads as zeros. */
export const PIECE_ZERO = -2;

export interface ToCompareWorker {
  id: number;
  start: number;
  length: number;
  /** [offset, length, fd, delta, fileEnd] per piece, covering [start, start+length). */
  a: number[];
  b: number[];
}

export type FromCompareWorker = { id: number; diffs: number[] } | { id: number; error: string };

/** The pieces of [start, start+length) of `img`, or undefined when some piece is not a plain file read. */
export function pieces(img: ImageSource, start: number, length: number): number[] | undefined {
  const out: number[] = [];
  let plain = true;
  for (const r of img.runs(start, length)) {
    if (!plain) break;
    if (r.layer === null) out.push(r.offset, r.length, PIECE_ZERO, 0, 0);
    else if (!r.layer.mapDirect || r.layer.asyncOnly) plain = false;
    else {
      r.layer.mapDirect(r.offset, r.length, (o, l, fd, delta, fileEnd) => {
        if (fd < 0) plain = false;
        else out.push(o, l, fd, delta, fileEnd);
      });
    }
  }
  return plain ? out : undefined;
}

export class ComparePool {
  private readonly workers: Worker[];
  private readonly idle: Worker[];
  private readonly queue: { job: ToCompareWorker; done: (r: FromCompareWorker) => void }[] = [];
  private readonly waiting = new Map<number, (r: FromCompareWorker) => void>();
  private nextId = 0;

  private constructor(n: number, file: string) {
    this.workers = Array.from({ length: n }, () => {
      const w = new Worker(file);
      w.on('message', (m: FromCompareWorker) => this.answer(w, m));
      // Not unref'd: an await on a worker's answer must keep the process alive (close() ends them).
      return w;
    });
    this.idle = [...this.workers];
  }

  /** Starts `n` workers, or undefined where the worker script is not built (tests run the sources). */
  static start(n: number): ComparePool | undefined {
    const file = path.join(__dirname, 'compare-worker.js');
    if (n < 1 || !fs.existsSync(file)) return undefined;
    return new ComparePool(n, file);
  }

  /** Compares one span; resolves with its differing ranges as [start, end, start, end, ...]. */
  run(start: number, length: number, a: number[], b: number[]): Promise<number[]> {
    return new Promise((resolve, reject) => {
      const job = { id: this.nextId++, start, length, a, b };
      const done = (r: FromCompareWorker) => ('error' in r ? reject(new ChainfsError(undefined, r.error, 'EIO')) : resolve(r.diffs));
      const w = this.idle.pop();
      if (w) this.send(w, job, done);
      else this.queue.push({ job, done });
    });
  }

  close(): Promise<number[]> {
    return Promise.all(this.workers.map((w) => w.terminate()));
  }

  private send(w: Worker, job: ToCompareWorker, done: (r: FromCompareWorker) => void): void {
    this.waiting.set(job.id, done);
    w.postMessage(job);
  }

  private answer(w: Worker, m: FromCompareWorker): void {
    const done = this.waiting.get(m.id)!;
    this.waiting.delete(m.id);
    const next = this.queue.shift();
    if (next) this.send(w, next.job, next.done);
    else this.idle.push(w);
    done(m);
  }
}

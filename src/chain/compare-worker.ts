/**
 * A compare worker thread (started by compare-pool.ts): for each job it
 * reads both sides' pieces of one span straight from their files (the fds
 * are the process's), STEP bytes at a time into buffers that stay in this
 * core's cache, compares them, and answers the differing 4 KiB blocks.
 */
import * as fs from 'node:fs';
import { parentPort } from 'node:worker_threads';
import { PIECE_ZERO, type FromCompareWorker, type ToCompareWorker } from './compare-pool';

const STEP = 256 << 10;
const BLOCK = 4096;
const port = parentPort!;
const x = Buffer.allocUnsafeSlow(STEP);
const y = Buffer.allocUnsafeSlow(STEP);

port.on('message', (job: ToCompareWorker) => {
  let reply: FromCompareWorker;
  try {
    const diffs: number[] = [];
    const end = job.start + job.length;
    for (let pos = job.start; pos < end; pos += STEP) {
      const n = Math.min(STEP, end - pos);
      fill(x, job.a, pos, n);
      fill(y, job.b, pos, n);
      if (x.compare(y, 0, n, 0, n) === 0) continue;
      for (let q = 0; q < n; q += BLOCK) {
        const qe = Math.min(q + BLOCK, n);
        if (x.compare(y, q, qe, q, qe) === 0) continue;
        const s = pos + q;
        if (diffs.length > 0 && diffs[diffs.length - 1] === s) diffs[diffs.length - 1] = pos + qe;
        else diffs.push(s, pos + qe);
      }
    }
    reply = { id: job.id, diffs };
  } catch (e) {
    reply = { id: job.id, error: (e as Error).message };
  }
  port.postMessage(reply);
});

/**
 * buf[0, n) = the view's bytes at [from, from+n), from pieces
 * [offset, length, fd, delta, fileEnd]... (fd PIECE_ZERO: zeros): a
 * piece's bytes are at file position offset + delta, zeros at or past
 * fileEnd (the layers' mapDirect contract).
 */
function fill(buf: Buffer, pieces: number[], from: number, n: number): void {
  const to = from + n;
  for (let i = 0; i < pieces.length; i += 5) {
    const off = pieces[i];
    const len = pieces[i + 1];
    if (off + len <= from) continue;
    if (off >= to) break;
    const s = Math.max(off, from);
    const e = Math.min(off + len, to);
    const fd = pieces[i + 2];
    if (fd === PIECE_ZERO) {
      buf.fill(0, s - from, e - from);
      continue;
    }
    const pos = s + pieces[i + 3];
    const fileEnd = pieces[i + 4];
    const want = Math.max(0, Math.min(e - s, fileEnd - pos));
    let got = 0;
    while (got < want) {
      const r = fs.readSync(fd, buf, s - from + got, want - got, pos + got);
      if (r === 0) throw new Error(`a layer file was cut short while in use (it ends by ${pos + got}; it had ${fileEnd} bytes)`);
      got += r;
    }
    if (want < e - s) buf.fill(0, s - from + want, e - from);
  }
}

/**
 * The SHA-512 worker thread (started by checksum.ts). It receives the
 * output's bytes in file order, as transferred buffers (handed back once
 * hashed), as runs of zeros (hashed from one shared zero buffer, so a hole
 * costs no allocation), or as a whole file to read itself.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { parentPort } from 'node:worker_threads';
import type { ToHashWorker } from './checksum';

const ZEROS = Buffer.alloc(1 << 20);
const READ_CHUNK = 4 << 20;
/** A progress note at least this often while hashing long zero runs or a file. */
const REPORT_EVERY = 64 << 20;

const port = parentPort!;
const hash = createHash('sha512');
let hashed = 0;

port.on('message', (m: ToHashWorker) => {
  try {
    switch (m.t) {
      case 'data':
        hash.update(new Uint8Array(m.buf, 0, m.length));
        hashed += m.length;
        port.postMessage({ t: 'free', buf: m.buf, hashed }, [m.buf]);
        return;
      case 'zeros':
        zeros(m.length);
        port.postMessage({ t: 'hashed', hashed });
        return;
      case 'file':
        file(m.path);
        port.postMessage({ t: 'hashed', hashed });
        return;
      case 'digest':
        port.postMessage({ t: 'digest', hex: hash.digest('hex'), hashed });
        return;
    }
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    port.postMessage({ t: 'fail', message: err.message, code: err.code ?? 'EIO' });
  }
});

function zeros(length: number): void {
  let left = length;
  let sinceReport = 0;
  while (left > 0) {
    const n = Math.min(left, ZEROS.length);
    hash.update(n === ZEROS.length ? ZEROS : ZEROS.subarray(0, n));
    left -= n;
    hashed += n;
    sinceReport += n;
    if (sinceReport >= REPORT_EVERY) {
      port.postMessage({ t: 'hashed', hashed });
      sinceReport = 0;
    }
  }
}

function file(path: string): void {
  const fd = fs.openSync(path, 'r');
  try {
    const buf = Buffer.allocUnsafe(READ_CHUNK);
    let pos = 0;
    let sinceReport = 0;
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, pos);
      if (n === 0) break;
      hash.update(buf.subarray(0, n));
      pos += n;
      hashed += n;
      sinceReport += n;
      if (sinceReport >= REPORT_EVERY) {
        port.postMessage({ t: 'hashed', hashed });
        sinceReport = 0;
      }
    }
  } finally {
    fs.closeSync(fd);
  }
}

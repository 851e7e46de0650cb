/**
 * `revision.counter` (longhorn-engine pkg/replica/revision_counter.go): a
 * 4096-byte file, the decimal counter padded with NULs, parsed with
 * `strconv.ParseInt(strings.Trim(buf, "\x00"), 10, 64)`. It exists only when
 * the replica ran with the revision counter enabled (the default up to
 * v1.6.x, off from v1.7.0: manager setting `disable-revision-counter`).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { openRegularReadOnly } from '../replica/files';

export const REVISION_COUNTER = 'revision.counter';
const FILE_SIZE = 4096;

/** `absent`, the counter (a bigint: int64), or why the engine could not parse it (it would fail to open the replica). */
export type RevisionCounter = { kind: 'absent' } | { kind: 'value'; value: bigint } | { kind: 'bad'; reason: string };

export function readRevisionCounter(replicaDir: string): RevisionCounter {
  const p = path.join(replicaDir, REVISION_COUNTER);
  let fd: number;
  try {
    fd = openRegularReadOnly(p, 'revision counter');
  } catch (e) {
    if ((e as { code?: string }).code === 'ENOENT') return { kind: 'absent' };
    return { kind: 'bad', reason: (e as Error).message };
  }
  try {
    const buf = Buffer.alloc(FILE_SIZE);
    const n = fs.readSync(fd, buf, 0, FILE_SIZE, 0);
    return parseRevisionCounter(buf.subarray(0, n));
  } catch (e) {
    return { kind: 'bad', reason: `cannot read: ${(e as Error).message}` };
  } finally {
    fs.closeSync(fd);
  }
}

const INT64_MAX = (1n << 63n) - 1n;

/** Go's Trim of NULs at both ends, then ParseInt base 10 (sign allowed, int64 range). */
export function parseRevisionCounter(buf: Buffer): RevisionCounter {
  let s = 0;
  let e = buf.length;
  while (s < e && buf[s] === 0) s++;
  while (e > s && buf[e - 1] === 0) e--;
  const text = buf.toString('latin1', s, e);
  if (!/^[+-]?\d+$/.test(text)) return { kind: 'bad', reason: `not a decimal number: ${JSON.stringify(text.slice(0, 40))}` };
  const v = BigInt(text);
  if (v > INT64_MAX || v < -INT64_MAX - 1n) return { kind: 'bad', reason: `${text} is out of int64 range` };
  return { kind: 'value', value: v };
}

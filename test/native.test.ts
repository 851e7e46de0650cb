/** The N-API addon on real files with real holes. */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { native } from '../src/native';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-native-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function sparseFile(name: string, size: number, extents: [number, number][]): number {
  const p = path.join(tmp, name);
  const fd = fs.openSync(p, 'w+');
  fs.ftruncateSync(fd, size);
  for (const [off, len] of extents) fs.writeSync(fd, Buffer.alloc(len), 0, len, off); // zeros, but allocated
  fs.fsyncSync(fd);
  return fd;
}

describe('seekData / seekHole', () => {
  it('finds allocated zero extents and holes, and -1 past the last data', () => {
    const fd = sparseFile('a', 1 << 20, [[65536, 8192], [512 * 1024, 4096]]);
    expect(native.seekData(fd, 0)).toBe(65536);
    expect(native.seekHole(fd, 65536)).toBe(65536 + 8192);
    expect(native.seekData(fd, 65536 + 8192)).toBe(512 * 1024);
    expect(native.seekHole(fd, 512 * 1024)).toBe(512 * 1024 + 4096);
    expect(native.seekData(fd, 512 * 1024 + 4096)).toBe(-1);
    expect(native.seekHole(fd, 0)).toBe(0);
    expect(native.seekHole(fd, 2 << 20)).toBe(-1); // past EOF: ENXIO
    fs.closeSync(fd);
  });

  it('throws Node-style errors for a bad fd', () => {
    expect(() => native.seekData(-1, 0)).toThrow(expect.objectContaining({ code: 'EBADF' }));
  });
});

describe('copyFileRange / punchHole / preadNoWait', () => {
  it('copies bytes between files', () => {
    const src = sparseFile('src', 1 << 16, []);
    fs.writeSync(src, Buffer.from('hello chainfs'), 0, 13, 100);
    const dst = sparseFile('dst', 1 << 16, []);
    let done = 0;
    while (done < 13) done += native.copyFileRange(src, 100 + done, dst, 200 + done, 13 - done);
    const b = Buffer.alloc(13);
    fs.readSync(dst, b, 0, 13, 200);
    expect(b.toString()).toBe('hello chainfs');
    fs.closeSync(src);
    fs.closeSync(dst);
  });

  it('punches a hole that SEEK_DATA then skips', () => {
    const fd = sparseFile('p', 1 << 16, [[0, 1 << 16]]);
    native.punchHole(fd, 4096, 8192);
    expect(native.seekHole(fd, 0)).toBe(4096);
    expect(native.seekData(fd, 4096)).toBe(12288);
    expect(fs.fstatSync(fd).size).toBe(1 << 16);
    fs.closeSync(fd);
  });

  it('reads cached data without blocking, and checks buffer bounds', () => {
    const fd = sparseFile('c', 1 << 16, []);
    fs.writeSync(fd, Buffer.alloc(4096, 7), 0, 4096, 8192);
    const b = Buffer.alloc(4096);
    const n = native.preadNoWait(fd, b, 0, 4096, 8192);
    expect(n === -1 || n === 4096).toBe(true); // just written: normally cached
    if (n === 4096) expect(b[4095]).toBe(7);
    expect(() => native.preadNoWait(fd, b, 1, 4096, 0)).toThrow(RangeError);
    fs.closeSync(fd);
  });

  it('starts writeback of a regular file (not of a pipe); setPipeSize says -1 for a non-pipe', async () => {
    const fd = sparseFile('w', 1 << 16, [[0, 1 << 16]]);
    await native.startWritebackAsync(fd);
    fs.closeSync(fd);
    const fifo = path.join(tmp, 'fifo');
    execFileSync('mkfifo', [fifo]);
    const pw = fs.openSync(fifo, fs.constants.O_RDWR | fs.constants.O_NONBLOCK); // Linux opens a FIFO read-write without a peer
    await expect(native.startWritebackAsync(pw)).rejects.toMatchObject({ code: 'ESPIPE' });
    fs.closeSync(pw);
    const [r] = [fs.openSync('/dev/null', 'r')];
    expect(native.setPipeSize(r, 1 << 20)).toBe(-1); // not a pipe
    fs.closeSync(r);
  });
});

describe('mapped ranges (the export writers\' zero scan and writes)', () => {
  const MiB = 1 << 20;
  function dataFile(name: string, size: number): number {
    const p = path.join(tmp, name);
    const b = Buffer.alloc(size);
    for (let i = 0; i < size; i += 4096) b[i + 7] = (i / 4096) % 2 ? 0 : 1; // odd 4 KiB blocks all zero
    fs.writeFileSync(p, b);
    return fs.openSync(p, 'r');
  }

  it('marks the non-zero segments and writes the mapped bytes where asked', async () => {
    const fd = dataFile('m1', 1 * MiB);
    const m = native.mapRange(fd, 0, 1 * MiB);
    const out = new Uint8Array(256);
    expect(native.nonZeroMapped(m, 0, 1 * MiB, 0, 4096, out)).toBe(256);
    expect([...out.subarray(0, 6)]).toEqual([1, 0, 1, 0, 1, 0]);
    const o = fs.openSync(path.join(tmp, 'm1.out'), 'w+');
    await native.writeMappedAsync(m, 8192, 8192, o, 100);
    native.releaseMapping(m);
    const got = Buffer.alloc(8192);
    fs.readSync(o, got, 0, 8192, 100);
    const want = Buffer.alloc(8192);
    fs.readSync(fd, want, 0, 8192, 8192);
    expect(got.equals(want)).toBe(true);
    fs.closeSync(o);
    fs.closeSync(fd);
  });

  it('a file cut short under the mapping: the scan throws EIO and the write rejects, the process lives on', async () => {
    const fd = dataFile('m2', 2 * MiB);
    const m = native.mapRange(fd, 0, 2 * MiB);
    fs.truncateSync(path.join(tmp, 'm2'), 0); // what a writer of the layer might do meanwhile
    const out = new Uint8Array(512);
    expect(() => native.nonZeroMapped(m, 0, 2 * MiB, 0, 4096, out)).toThrow(expect.objectContaining({ code: 'EIO' }));
    const o = fs.openSync(path.join(tmp, 'm2.out'), 'w+');
    const err = await native.writeMappedAsync(m, 0, 2 * MiB, o, 0).then(() => null, (e: NodeJS.ErrnoException) => e);
    expect(['EIO', 'EFAULT']).toContain(err?.code); // the kernel's copy from the mapping fails; no signal
    native.releaseMapping(m);
    fs.closeSync(o);
    fs.closeSync(fd);
  });
});

describe('tryLock (the mount-point claim)', () => {
  it('one open file description holds it; another is refused until the first closes; a child process is refused too', () => {
    const file = path.join(tmp, 'claim.lock');
    const a = fs.openSync(file, 'a+');
    const b = fs.openSync(file, 'a+');
    expect(native.tryLock(a)).toBe(true);
    expect(native.tryLock(b)).toBe(false);
    const other = execFileSync(process.execPath, ['-e',
      `const {native}=require(${JSON.stringify(path.join(__dirname, '..', 'dist', 'native'))});process.stdout.write(String(native.tryLock(require('fs').openSync(${JSON.stringify(file)},'a+'))))`]).toString();
    expect(other).toBe('false');
    fs.closeSync(a);
    expect(native.tryLock(b)).toBe(true);
    fs.closeSync(b);
    expect(() => native.tryLock(-1)).toThrow(/EBADF|flock/);
  });
});

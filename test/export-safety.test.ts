/**
 * `chainfs export` never leaves a partial OUT and never touches the source:
 * interrupted by SIGINT, SIGTERM or SIGKILL, on a full disk (a 2 MiB tmpfs),
 * on a read error, on a replica that is live or whose head changes during
 * the export; OUT is refused inside the replica and when it exists without
 * --overwrite. Every failure is one line on stderr with exit 1.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { findWriters } from '../src/source/replica/live';
import { CHAINFS, chainfs, chainfsOk } from './helpers/cli';
import { buildReplica, type BuiltReplica } from './helpers/replica-builder';
import { noBacking, qcow2CompressedBacking } from './helpers/scenarios';
import { fingerprintTree } from './helpers/tree';

// The CLI runs through spawnSync: let the test worker's event loop breathe between tests, or
// vitest's own RPC to it times out while a run of synchronous tests goes on.
const breathe = () => new Promise<void>((resolve) => setImmediate(resolve));
afterEach(breathe);

const MiB = 1 << 20;
const GiB = 1 << 30;

/**
 * A replica written by hand, as the engine lays it out: one head of `size`
 * bytes holding `chunks` MiB of random (incompressible) data spread over it.
 * Fast to build (the data is one random MiB, varied per chunk), slow to
 * export with a checksum, which hashes every byte of the volume.
 */
function bigReplica(parent: string, name: string, size: number, chunks: number): string {
  const dir = path.join(parent, `${name}-abcd1234`);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  fs.writeFileSync(path.join(dir, 'volume.meta'), `${JSON.stringify({
    Size: size, Head: 'volume-head-000.img', Dirty: false, Rebuilding: false, Error: '', Parent: '', SectorSize: 512, BackingFilePath: '',
  })}\n`);
  fs.writeFileSync(path.join(dir, 'volume-head-000.img.meta'), `${JSON.stringify({
    Name: 'volume-head-000.img', Parent: '', Removed: false, UserCreated: false, Created: '2024-05-01T10:00:00Z', Labels: null,
  })}\n`);
  const fd = fs.openSync(path.join(dir, 'volume-head-000.img'), 'w');
  try {
    fs.ftruncateSync(fd, size);
    const data = randomBytes(MiB);
    const stride = Math.floor(size / chunks / MiB) * MiB;
    for (let i = 0; i < chunks; i++) {
      data.writeUInt32LE(i, 0);
      fs.writeSync(fd, data, 0, MiB, i * stride);
    }
  } finally {
    fs.closeSync(fd);
  }
  return dir;
}

/**
 * fingerprintTree for trees too big to read whole: every file's inode, size,
 * blocks, mtime and ctime (a write moves ctime, which no user-space call can
 * set back), plus the SHA-256 of its first and last MiB.
 */
function statTree(root: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const n of fs.readdirSync(root).sort()) {
    const p = path.join(root, n);
    const st = fs.lstatSync(p, { bigint: true });
    const fd = fs.openSync(p, 'r');
    const ends = Buffer.alloc(2 * MiB);
    fs.readSync(fd, ends, 0, MiB, 0);
    fs.readSync(fd, ends, MiB, MiB, Math.max(0, Number(st.size) - MiB));
    fs.closeSync(fd);
    out.set(n, `${st.ino} ${st.size} ${st.blocks} ${st.mtimeNs} ${st.ctimeNs} ${st.mode} ${createHash('sha256').update(ends).digest('hex')}`);
  }
  return out;
}

interface Running {
  child: ChildProcess;
  stderr: () => string;
  exit: Promise<[number | null, NodeJS.Signals | null]>;
}

function start(args: string[]): Running {
  const child = spawn(CHAINFS, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d) => { err += d; });
  child.stdout!.resume();
  return { child, stderr: () => err, exit: once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]> };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor(what: string, cond: () => boolean, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** Entries of OUT's directory that belong to OUT: OUT itself or its temporary names. */
function leftovers(out: string): string[] {
  const base = path.basename(out);
  return fs.readdirSync(path.dirname(out)).filter((n) => n === base || n.startsWith(`.${base}.chainfs-`));
}

function oneLineError(r: { code: number | null; stderr: string }): string {
  expect(r.code).toBe(1);
  const lines = r.stderr.trim().split('\n').filter((l) => !l.startsWith('chainfs: warning:'));
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^chainfs: /);
  expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
  return lines[0];
}

let tmp: string;
let big: string;
let bigBefore: Map<string, string>;
let small: BuiltReplica;
let smallBefore: ReturnType<typeof fingerprintTree>;

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-safety-'));
  // 4 GiB with 32 MiB of data: a checksummed export hashes 4 GiB (seconds), so a signal lands mid-export.
  big = bigReplica(path.join(tmp, 'big'), 'big', 4 * GiB, 32);
  small = buildReplica(noBacking, tmp);
  // Written back first: ext4 allocates an extent tree block at writeback, which moves st_blocks by 8 later.
  execFileSync('sync', ['-f', tmp]);
  bigBefore = statTree(big);
  smallBefore = fingerprintTree(small.root);
});

afterAll(() => {
  try {
    if (big) expect(statTree(big)).toEqual(bigBefore);
    if (small) expect(fingerprintTree(small.root)).toEqual(smallBefore);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});

describe('interrupted exports leave nothing at OUT', () => {
  for (const [signal, code, layout] of [['SIGINT', 130, 'file'], ['SIGTERM', 143, 'longhorn']] as const) {
    it(`${signal} (${layout} layout) removes the temporary output and exits ${code}`, async () => {
      const out = path.join(tmp, `interrupted-${signal}-0a0b0c0d`);
      const run = start(['export', big, out, '--checksum', '--layout', layout, '--quiet']);
      await waitFor('the temporary output', () => leftovers(out).length > 0);
      await sleep(300);
      run.child.kill(signal);
      const [exitCode] = await run.exit;
      expect(exitCode).toBe(code);
      expect(run.stderr()).toMatch(new RegExp(`interrupted by ${signal}; the partial export was removed`));
      expect(leftovers(out)).toEqual([]);
    });
  }

  it('SIGKILL leaves only the temporary name, which the next export to OUT removes', async () => {
    const out = path.join(tmp, 'killed.raw');
    const run = start(['export', big, out, '--checksum', '--quiet']);
    await waitFor('the temporary output', () => leftovers(out).length > 0);
    await sleep(300);
    run.child.kill('SIGKILL');
    const [, sig] = await run.exit;
    expect(sig).toBe('SIGKILL');
    const left = leftovers(out);
    expect(left).toHaveLength(1);
    expect(left[0]).toBe(`.killed.raw.chainfs-${run.child.pid}.tmp`);

    const r = chainfs(['export', big, out, '--quiet']);
    expect(r.code).toBe(0);
    expect(r.stderr).toContain(`removed ${path.join(tmp, left[0])}, the partial output of an export that was killed`);
    expect(leftovers(out)).toEqual(['killed.raw']);
    expect(fs.statSync(out).size).toBe(4 * GiB);
  });
});

describe('a full disk', () => {
  let mnt: string;
  let mounted = false;

  beforeAll(() => {
    mnt = fs.mkdtempSync(path.join(tmp, 'tmpfs-'));
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', mnt]);
    mounted = true;
  });

  afterAll(() => {
    if (!mounted) return;
    try {
      execFileSync('umount', [mnt]);
    } catch {
      execFileSync('umount', ['-l', mnt]);
    }
  });

  it('is seen before writing when the data cannot fit', () => {
    const out = path.join(mnt, 'big.raw');
    expect(oneLineError(chainfs(['export', big, out, '--quiet']))).toMatch(/big\.raw: not enough free space: the export needs up to 32\.0 MiB/);
    expect(fs.readdirSync(mnt)).toEqual([]);
  });

  it('ENOSPC while writing (compression defeats the estimate) is one line, and nothing is left', () => {
    for (const [name, extra] of [['big.qcow2', []], ['bi-full-0a0b0c0d', ['--layout', 'longhorn']]] as const) {
      const out = path.join(mnt, name);
      const line = oneLineError(chainfs(['export', big, out, '--format', 'qcow2', '--compress', '--quiet', ...extra]));
      expect(line).toBe(`chainfs: ${out}: no space left on device while writing the export; nothing was left behind`);
      expect(fs.readdirSync(mnt)).toEqual([]);
    }
  });

  it('a small read-only file system (a chainfs mount shows 0 B free) is called read-only, not short of space', () => {
    const ro = fs.mkdtempSync(path.join(tmp, 'ro-'));
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m,ro', 'tmpfs', ro]);
    try {
      const out = path.join(ro, 'big.raw');
      expect(oneLineError(chainfs(['export', big, out, '--quiet']))).toBe(`chainfs: ${out}: cannot write in ${ro}: read-only file system; nothing was written`);
    } finally {
      execFileSync('umount', [ro]);
    }
  });

  it('stderr on a full disk (-p 2>export.log, the log\'s disk full) does not kill the export: OUT complete, no temporary left', () => {
    const out = path.join(tmp, 'stderr-full.raw');
    const fd = fs.openSync('/dev/full', 'w');
    try {
      const r = chainfs(['export', small.dir, out, '-p', '--checksum'], { stdio: ['ignore', 'pipe', fd] });
      expect(r.code).toBe(0);
      expect(r.stdout.toString()).toMatch(new RegExp(`^[0-9a-f]{128}  ${out}\\n$`)); // the checksum line still reaches stdout
    } finally {
      fs.closeSync(fd);
    }
    expect(leftovers(out)).toEqual(['stderr-full.raw']);
    expect(fs.statSync(out).size).toBe(noBacking.size);
    fs.rmSync(out);
  });

  it('ENOSPC on stdout redirected to a file (a streamed qcow2: export - > FULL/out) is one line, no stack', () => {
    const out = path.join(mnt, 'stream.qcow2');
    const fd = fs.openSync(out, 'w');
    try {
      const r = chainfs(['export', big, '-', '--format', 'qcow2', '--quiet'], { stdio: ['ignore', fd, 'pipe'] });
      expect(oneLineError(r)).toBe('chainfs: stdout: write failed: no space left on device');
    } finally {
      fs.closeSync(fd);
      fs.rmSync(out);
    }
  });
});

describe('the source is protected', () => {
  it('refuses an OUT inside the replica directory', () => {
    const out = path.join(small.dir, 'export.raw');
    expect(oneLineError(chainfs(['export', small.dir, out, '--quiet']))).toMatch(/is inside the source/);
    expect(fs.existsSync(out)).toBe(false);
  });

  it('refuses an existing OUT unless --overwrite, then replaces it', () => {
    const out = path.join(tmp, 'existing.raw');
    fs.writeFileSync(out, 'precious');
    expect(oneLineError(chainfs(['export', small.dir, out, '--quiet']))).toMatch(/existing\.raw: already exists; pass --overwrite/);
    expect(fs.readFileSync(out, 'utf8')).toBe('precious');
    chainfsOk(['export', small.dir, out, '--quiet', '--overwrite']);
    expect(fs.statSync(out).size).toBe(noBacking.size);
    expect(leftovers(out)).toEqual(['existing.raw']);
  });

  it('a read error aborts the export with one line naming the file, and no output', () => {
    const b = buildReplica(qcow2CompressedBacking, tmp);
    const host = firstCompressedCluster(b.backingPath!);
    const fd = fs.openSync(b.backingPath!, 'r+');
    fs.writeSync(fd, Buffer.alloc(4096, 0xff), 0, 4096, host); // garbage where deflate data was
    fs.closeSync(fd);
    for (const fmt of ['raw', 'qcow2']) {
      const out = path.join(tmp, `unreadable.${fmt}`);
      const line = oneLineError(chainfs(['export', b.dir, out, '--format', fmt, '--checksum', '--quiet']));
      expect(line).toContain(`${b.backingPath}: qcow2: compressed cluster`);
      expect(line).toMatch(/does not decompress/);
      expect(leftovers(out)).toEqual([]);
    }
  });
});

describe('a live replica', () => {
  let holder: ChildProcess | undefined;
  afterAll(() => holder?.kill('SIGKILL'));

  it('findWriters lists the processes with a file of the directory open for writing, not readers', async () => {
    const dir = fs.mkdtempSync(path.join(tmp, 'writers-'));
    for (const f of ['a', 'b', 'c']) fs.writeFileSync(path.join(dir, f), '');
    const other = path.join(tmp, 'elsewhere');
    fs.writeFileSync(other, '');
    const p = spawn('sh', ['-c', 'exec 3>>"$1/a" 4<"$1/b" 5<>"$1/c" 6>>"$2"; exec sleep 60', 'sh', dir, other], { stdio: 'ignore' });
    try {
      await waitFor('the writer', () => findWriters(dir).some((w) => w.pid === p.pid && w.command === 'sleep'));
      const mine = findWriters(dir).filter((w) => w.pid === p.pid);
      expect(mine.map((w) => path.basename(w.file)).sort()).toEqual(['a', 'c']);
      expect(mine[0].command).toBe('sleep');
    } finally {
      p.kill('SIGKILL');
    }
  });

  it('refuses the head of a Dirty replica open for writing elsewhere, unless --force; its snapshots are fine', async () => {
    const live = buildReplica({ ...noBacking, name: 'live', dirty: true }, tmp);
    const head = path.join(live.dir, live.views[0].file);
    holder = spawn('sh', ['-c', 'exec 3<>"$1"; exec sleep 60', 'sh', head], { stdio: 'ignore' });
    await waitFor('the engine stand-in', () => findWriters(live.dir).some((w) => w.pid === holder!.pid && w.command === 'sleep'));

    const out = path.join(tmp, 'live.raw');
    const line = oneLineError(chainfs(['export', live.dir, out, '--quiet']));
    expect(line).toContain(`replica is in use: sleep (pid ${holder.pid}) has ${live.views[0].file} open for writing`);
    expect(line).toContain('Export a snapshot instead (--snapshot NAME), or pass --force');
    expect(leftovers(out)).toEqual([]);

    const forced = chainfs(['export', live.dir, out, '--quiet', '--force']);
    expect(forced.code).toBe(0);
    expect(forced.stderr).toMatch(/warning: .*replica is in use .*--force/);
    expect(fs.statSync(out).size).toBe(noBacking.size);

    chainfsOk(['export', live.dir, path.join(tmp, 'live-snap.raw'), '--snapshot', 'user-snap-2', '--quiet']);
  });
});

describe('a head that changes during the export', () => {
  it('is refused, with nothing kept at OUT, unless --force', async () => {
    const dir = bigReplica(path.join(tmp, 'changing'), 'changing', GiB, 16);
    const head = path.join(dir, 'volume-head-000.img');
    // Something writing to the head while nothing has it open at check time: only the before/after stat comparison can tell.
    // One process stamping the file without a pause (a shell loop of `touch` forks, and on a busy machine can
    // leave a gap longer than an export of 16 MiB of data).
    const toucher = spawn('python3', ['-c', 'import os, sys\nwhile True: os.utime(sys.argv[1])', head], { stdio: 'ignore' });
    try {
      const out = path.join(tmp, 'changing.raw');
      const line = oneLineError(chainfs(['export', dir, out, '--quiet']));
      expect(line).toMatch(/volume-head-000\.img changed during the export .* was not kept; export a snapshot instead \(--snapshot NAME\), or pass --force/);
      expect(leftovers(out)).toEqual([]);
      const forced = chainfs(['export', dir, out, '--quiet', '--force']);
      expect(forced.code).toBe(0);
      expect(forced.stderr).toMatch(/warning: .*changed during the export; keeping it because of --force/);
      expect(leftovers(out)).toEqual(['changing.raw']);
    } finally {
      toucher.kill('SIGKILL');
    }
  });
});

describe('--checksum on a volume larger than a transfer buffer', () => {
  it('equals sha512sum of the output, holes included', () => {
    const dir = bigReplica(path.join(tmp, 'sum'), 'sum', 64 * MiB, 8);
    const out = path.join(tmp, 'sum.raw');
    const printed = chainfsOk(['export', dir, out, '--checksum', '--quiet']).toString();
    expect(printed).toBe(execFileSync('sha512sum', [out], { encoding: 'utf8' }));
    expect(printed.split(' ')[0]).toBe(createHash('sha512').update(fs.readFileSync(out)).digest('hex'));
    expect(fs.statSync(out).blocks * 512).toBeLessThanOrEqual(8 * MiB + 64 * 1024); // sparse
  });
});

/** Host offset of the first compressed cluster of a qcow2 file (a minimal L1/L2 walk). */
function firstCompressedCluster(file: string): number {
  const f = fs.readFileSync(file);
  const bits = f.readUInt32BE(20);
  const l1Size = f.readUInt32BE(36);
  const l1 = Number(f.readBigUInt64BE(40));
  for (let i = 0; i < l1Size; i++) {
    const l2 = Number(f.readBigUInt64BE(l1 + 8 * i) & 0x00fffffffffffe00n);
    if (!l2) continue;
    for (let j = 0; j < 2 ** bits / 8; j++) {
      const e = f.readBigUInt64BE(l2 + 8 * j);
      if ((e >> 62n) & 1n) return Number(e & ((1n << BigInt(70 - bits)) - 1n));
    }
  }
  throw new Error(`${file} has no compressed cluster`);
}

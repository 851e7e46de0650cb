/**
 * Issue #11's targets, standalone (`tsc -p bench/tsconfig.json && node
 * dist/bench/bench/node.js [--root DIR] [--compare-size 4G] [--runs 3]
 * [--skip-compare] [--keep] [--cold]`):
 *
 *   - inspect of 3 data roots holding 500 replica directories (250 volumes
 *     x 2, short chains): wall time and peak RSS (GNU time), target < 1 s
 *     and < 150 MB;
 *   - mount of the same until catalog.json reads: target < 1 s;
 *   - compare of two replicas (4 GiB by default) whose views differ in 1%
 *     of their 4 KiB blocks (random positions), target at least 1.5x
 *     `qemu-img compare`. qemu-img cannot read a replica: it gets the flat
 *     images, exported beforehand (its best case; the export is not timed)
 *     or through the mount. It stops at the first difference, so it is also
 *     timed where it must read everything (the two replicas' identical
 *     copies of snapshot `base`, against `chainfs compare --snapshot base`),
 *     and `cmp -l` (which lists every differing byte) is timed too.
 *
 * Times are medians of `--runs` runs after one warm-up, page cache hot
 * (every tool reads the same cached files), or with `--cold` each run's
 * inputs evicted first (posix_fadvise DONTNEED on those files only, through
 * dd iflag=nocache: the rest of a shared machine's cache is left alone). Data goes under --root
 * (default /var/tmp/chainfs-bench-node) and is removed unless --keep.
 */
import { spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { encodeDiskMeta, encodeVolumeMeta, writeMetaFile } from '../test/helpers/replica-meta';

const REPO = path.resolve(__dirname, '..', '..', '..');
const CHAINFS = path.join(REPO, 'bin', 'chainfs');
const BLOCK = 4096;
const MiB = 1 << 20;

interface Args { root: string; compareSize: number; runs: number; skipCompare: boolean; keep: boolean; cold: boolean }

function parseArgs(argv: string[]): Args {
  const a: Args = { root: '/var/tmp/chainfs-bench-node', compareSize: 4 * 1024 * MiB, runs: 3, skipCompare: false, keep: false, cold: false };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    if (k === '--root') a.root = path.resolve(argv[++i]);
    else if (k === '--compare-size') a.compareSize = parseSize(argv[++i]);
    else if (k === '--runs') a.runs = Number(argv[++i]);
    else if (k === '--skip-compare') a.skipCompare = true;
    else if (k === '--keep') a.keep = true;
    else if (k === '--cold') a.cold = true;
    else throw new Error(`unknown option ${k}`);
  }
  return a;
}

function parseSize(s: string): number {
  const m = /^(\d+)([KMG]?)$/i.exec(s);
  if (!m) throw new Error(`bad size ${s}`);
  return Number(m[1]) * ({ '': 1, K: 1024, M: MiB, G: 1024 * MiB }[m[2].toUpperCase()] as number);
}

function median(xs: number[]): number {
  const s = [...xs].sort((x, y) => x - y);
  return s[Math.floor(s.length / 2)];
}

/** Runs argv under GNU time: wall seconds and peak RSS in MB; stdout to /dev/null. */
function timed(argv: string[]): { seconds: number; rssMb: number; code: number | null } {
  const r = spawnSync('/usr/bin/time', ['-f', '%e %M', ...argv], { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
  const last = r.stderr.trim().split('\n').pop() ?? '';
  const [e, m] = last.split(' ').map(Number);
  return { seconds: e, rssMb: m / 1024, code: r.status };
}

/** Wall time of argv in seconds (hrtime, finer than GNU time's 10 ms). */
function wall(argv: string[], okCodes = [0]): number {
  const t = process.hrtime.bigint();
  const r = spawnSync(argv[0], argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8', maxBuffer: 1 << 30 });
  // A crash exits 1 too, which `compare` and `cmp` use for "different": look at stderr as well.
  if (!okCodes.includes(r.status ?? -1) || /Cannot find module|internal error|Error: /.test(r.stderr)) {
    throw new Error(`${argv.join(' ')} exited ${r.status}: ${r.stderr}`);
  }
  return Number(process.hrtime.bigint() - t) / 1e9;
}

/**
 * Drops these files' pages from the page cache (posix_fadvise DONTNEED, through
 * GNU dd's iflag=nocache): a cold run of one tool without touching the rest of
 * a shared machine's cache.
 */
function evict(files: string[]): void {
  for (const f of files) spawnSync('dd', [`if=${f}`, 'iflag=nocache', 'count=0', 'status=none']);
}

function repeat(runs: number, f: () => number): number {
  f(); // warm-up
  return median(Array.from({ length: runs }, f));
}

// ---- a node of 500 short-chain replicas -------------------------------------------------------

const CREATED = '2024-05-01T10:00:00Z';

/** A replica directory with snapshot s1 (2 blocks) and a head (1 block): what an idle volume looks like. */
function writeShortReplica(dir: string, size: number, seed: number, counter: number | null, mtimeS: number): void {
  fs.mkdirSync(dir, { recursive: true });
  const block = Buffer.alloc(BLOCK, seed & 0xff);
  const snap = path.join(dir, 'volume-snap-s1.img');
  const head = path.join(dir, 'volume-head-001.img');
  for (const [file, blocks] of [[snap, [0, 7]], [head, [3]]] as const) {
    const fd = fs.openSync(file, 'w');
    fs.ftruncateSync(fd, size);
    for (const b of blocks) fs.writeSync(fd, block, 0, BLOCK, b * BLOCK);
    fs.closeSync(fd);
  }
  writeMetaFile(`${snap}.meta`, encodeDiskMeta({ Name: 'volume-head-000.img', Parent: '', Removed: false, UserCreated: true, Created: CREATED, Labels: null }));
  writeMetaFile(`${head}.meta`, encodeDiskMeta({ Name: 'volume-head-001.img', Parent: 'volume-snap-s1.img', Removed: false, UserCreated: false, Created: CREATED, Labels: null }));
  writeMetaFile(path.join(dir, 'volume.meta'), encodeVolumeMeta({
    Size: size, Head: 'volume-head-001.img', Dirty: false, Rebuilding: false, Error: '', Parent: 'volume-snap-s1.img', SectorSize: 512, BackingFilePath: '',
  }));
  if (counter !== null) {
    const c = Buffer.alloc(4096);
    c.write(String(counter));
    fs.writeFileSync(path.join(dir, 'revision.counter'), c);
  }
  fs.utimesSync(head, mtimeS, mtimeS);
}

function makeNode(base: string): string[] {
  const roots = [1, 2, 3].map((i) => path.join(base, `disk${i}`));
  if (fs.existsSync(path.join(base, '.done'))) return roots;
  fs.rmSync(base, { recursive: true, force: true });
  roots.forEach((r, i) => {
    fs.mkdirSync(path.join(r, 'replicas'), { recursive: true });
    fs.writeFileSync(path.join(r, 'longhorn-disk.cfg'), `{"diskName":"disk-${i + 1}","diskUUID":"${crypto.randomUUID()}","diskDriver":"","state":"ready"}`);
  });
  let n = 0;
  for (let v = 0; v < 250; v++) {
    const volume = `pvc-${crypto.createHash('sha256').update(String(v)).digest('hex').slice(0, 8)}-bench`;
    for (let k = 0; k < 2; k++) {
      const root = roots[n++ % 3];
      const id = crypto.createHash('sha256').update(`${v}/${k}`).digest('hex').slice(0, 8);
      // Half the volumes predate v1.7 (revision.counter), half do not (salvage).
      writeShortReplica(path.join(root, 'replicas', `${volume}-${id}`), 10 * 1024 * MiB, v + k, v % 2 === 0 ? 100 + k : null, 1_764_496_800.123456 + k);
    }
  }
  fs.writeFileSync(path.join(base, '.done'), '');
  return roots;
}

function benchInspect(roots: string[], runs: number, extra: string[]): { seconds: number; rssMb: number } {
  timed([CHAINFS, 'inspect', ...roots, '--json', ...extra]);
  const rs = Array.from({ length: runs }, () => timed([CHAINFS, 'inspect', ...roots, '--json', ...extra]));
  if (rs.some((r) => r.code !== 0)) throw new Error('inspect failed');
  return { seconds: median(rs.map((r) => r.seconds)), rssMb: Math.max(...rs.map((r) => r.rssMb)) };
}

/** Unmounts `mp` if something is mounted there: chainfs umount, else fusermount -uz. */
function unmount(mp: string): void {
  const mounted = () => fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === mp);
  if (!mounted()) return;
  spawnSync(CHAINFS, ['umount', mp]);
  if (mounted()) spawnSync('fusermount', ['-uz', mp]);
}

function benchMount(roots: string[], mp: string, runs: number): number {
  fs.mkdirSync(mp, { recursive: true });
  const once = () => {
    const t = process.hrtime.bigint();
    const r = spawnSync(CHAINFS, ['mount', ...roots, mp], { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`mount failed: ${r.stderr}`);
    try {
      JSON.parse(fs.readFileSync(path.join(mp, 'catalog.json'), 'utf8'));
      return Number(process.hrtime.bigint() - t) / 1e9;
    } finally {
      unmount(mp);
    }
  };
  return repeat(runs, once);
}

// ---- two replicas that differ in 1% of their blocks -------------------------------------------

/** A: snapshot `base` fully written, empty head. B: its own copy of `base`, and a head rewriting 1% of the blocks. */
function makeComparePair(base: string, size: number): { a: string; b: string; differing: number } {
  const a = path.join(base, 'a', 'replicas', 'pvc-cmp-0000000a');
  const b = path.join(base, 'b', 'replicas', 'pvc-cmp-0000000b');
  const stamp = path.join(base, `.done-${size}`);
  const nblocks = size / BLOCK;
  const differing = Math.floor(nblocks / 100);
  if (fs.existsSync(stamp)) return { a, b, differing };
  fs.rmSync(base, { recursive: true, force: true });
  for (const dir of [a, b]) fs.mkdirSync(dir, { recursive: true });
  const chunk = 64 * MiB;
  const buf = crypto.randomBytes(chunk);
  const fa = fs.openSync(path.join(a, 'volume-snap-base.img'), 'w');
  const fb = fs.openSync(path.join(b, 'volume-snap-base.img'), 'w');
  for (let off = 0; off < size; off += chunk) {
    for (let i = 0; i < chunk; i += BLOCK) buf.writeUInt32LE((off + i) / BLOCK, i); // every block distinct
    const n = Math.min(chunk, size - off);
    fs.writeSync(fa, buf, 0, n, off);
    fs.writeSync(fb, buf, 0, n, off);
  }
  fs.closeSync(fa);
  fs.closeSync(fb);
  const heads = [path.join(a, 'volume-head-001.img'), path.join(b, 'volume-head-001.img')];
  for (const h of heads) fs.closeSync(fs.openSync(h, 'w'));
  for (const h of heads) fs.truncateSync(h, size);
  const fh = fs.openSync(heads[1], 'r+');
  const rnd = crypto.randomBytes(BLOCK);
  const chosen = new Set<number>();
  let x = 12345;
  while (chosen.size < differing) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    chosen.add(Math.floor((x / 2 ** 32) * nblocks));
  }
  for (const blk of chosen) fs.writeSync(fh, rnd, 0, BLOCK, blk * BLOCK);
  fs.closeSync(fh);
  for (const dir of [a, b]) {
    writeMetaFile(path.join(dir, 'volume-snap-base.img.meta'), encodeDiskMeta({ Name: 'volume-head-000.img', Parent: '', Removed: false, UserCreated: true, Created: CREATED, Labels: null }));
    writeMetaFile(path.join(dir, 'volume-head-001.img.meta'), encodeDiskMeta({ Name: 'volume-head-001.img', Parent: 'volume-snap-base.img', Removed: false, UserCreated: false, Created: CREATED, Labels: null }));
    writeMetaFile(path.join(dir, 'volume.meta'), encodeVolumeMeta({
      Size: size, Head: 'volume-head-001.img', Dirty: false, Rebuilding: false, Error: '', Parent: 'volume-snap-base.img', SectorSize: 512, BackingFilePath: '',
    }));
  }
  for (const [dir, out] of [[a, 'a.raw'], [b, 'b.raw']]) {
    const r = spawnSync(CHAINFS, ['export', dir, path.join(base, out), '--quiet', '--overwrite'], { stdio: 'inherit' });
    if (r.status !== 0) throw new Error('export failed');
  }
  fs.writeFileSync(stamp, '');
  return { a, b, differing };
}

function main(): void {
  const args = parseArgs(process.argv.slice(2));
  fs.mkdirSync(args.root, { recursive: true });
  const rows: [string, string, string][] = [];
  const results: Record<string, number> = {};
  try {
    const roots = makeNode(path.join(args.root, 'node'));
    const ins = benchInspect(roots, args.runs, []);
    results.inspectSeconds = ins.seconds;
    results.inspectRssMb = ins.rssMb;
    rows.push(['inspect 3 roots, 500 replicas (--json)', `${ins.seconds.toFixed(2)} s, ${ins.rssMb.toFixed(0)} MB RSS`, '< 1 s, < 150 MB']);
    if (/--no-contents/.test(spawnSync(CHAINFS, ['inspect', '--help'], { encoding: 'utf8' }).stdout)) {
      // inspect also probes what the first views hold (blkid): the node's own cost is without it.
      const bare = benchInspect(roots, args.runs, ['--no-contents']);
      Object.assign(results, { inspectNoContentsSeconds: bare.seconds, inspectNoContentsRssMb: bare.rssMb });
      rows.push(['inspect 3 roots, 500 replicas (--json --no-contents)', `${bare.seconds.toFixed(2)} s, ${bare.rssMb.toFixed(0)} MB RSS`, '< 1 s, < 150 MB']);
    }
    const mnt = benchMount(roots, path.join(args.root, 'mnt'), args.runs);
    results.mountSeconds = mnt;
    rows.push(['mount 3 roots until catalog.json reads', `${mnt.toFixed(2)} s`, '< 1 s']);
    if (!args.skipCompare) {
      const base = path.join(args.root, 'compare');
      const p = makeComparePair(base, args.compareSize);
      const raw = (n: string) => path.join(base, n);
      const baseA = path.join(p.a, 'volume-snap-base.img');
      const baseB = path.join(p.b, 'volume-snap-base.img');
      const mpA = path.join(args.root, 'mnt-a');
      const mpB = path.join(args.root, 'mnt-b');
      for (const [dir, mp] of [[p.a, mpA], [p.b, mpB]]) {
        fs.mkdirSync(mp, { recursive: true });
        unmount(mp); // left by an interrupted run
        const r = spawnSync(CHAINFS, ['mount', dir, mp], { stdio: 'inherit' });
        if (r.status !== 0) throw new Error('mount failed');
      }
      const layerFiles = [baseA, baseB, path.join(p.a, 'volume-head-001.img'), path.join(p.b, 'volume-head-001.img')];
      const rawFiles = [raw('a.raw'), raw('b.raw')];
      // Hot: every input in the page cache (a warm-up run first). Cold (--cold): each run's inputs evicted first.
      const t = (argv: string[], ok: number[] = [0]) => repeat(args.runs, () => {
        // The mounted views have page cache of their own (FUSE): dropped too.
        if (args.cold) evict([...layerFiles, ...rawFiles, ...[mpA, mpB].flatMap((m) => [`${m}/volume.img`, `${m}/snapshots/base.img`])]);
        return wall(argv, ok);
      });
      try {
        const ours = t([CHAINFS, 'compare', p.a, p.b, '--json'], [1]);
        const qemu = t(['qemu-img', 'compare', '-f', 'raw', '-F', 'raw', raw('a.raw'), raw('b.raw')], [1]);
        // GNU cmp stops at the first difference when stdout is /dev/null: pipe it, so it lists them all.
        const cmpl = t(['bash', '-c', `cmp -l '${raw('a.raw')}' '${raw('b.raw')}' | wc -l >/dev/null`]);
        const cmplMount = t(['bash', '-c', `cmp -l '${mpA}/volume.img' '${mpB}/volume.img' | wc -l >/dev/null`]);
        // Everything read: two distinct files with the same bytes (each replica's own copy of snapshot base).
        const oursSame = t([CHAINFS, 'compare', p.a, p.b, '--snapshot', 'base', '--json']);
        const qemuSame = t(['qemu-img', 'compare', '-f', 'raw', '-F', 'raw', baseA, baseB]);
        const qemuSameMount = t(['qemu-img', 'compare', '-f', 'raw', '-F', 'raw', `${mpA}/snapshots/base.img`, `${mpB}/snapshots/base.img`]);
        Object.assign(results, {
          cold: args.cold ? 1 : 0,
          compareSeconds: ours, qemuCompareSeconds: qemu, cmpListSeconds: cmpl, cmpListMountSeconds: cmplMount,
          compareIdenticalSeconds: oursSame, qemuCompareIdenticalSeconds: qemuSame, qemuCompareIdenticalMountSeconds: qemuSameMount,
        });
        const size = `${args.compareSize >= 1024 * MiB ? `${args.compareSize / 1024 / MiB} GiB` : `${args.compareSize / MiB} MiB`}, ${args.cold ? 'cold' : 'hot'} cache`;
        const x = (theirs: number, mine: number) => `chainfs ${(theirs / mine).toFixed(2)}x`;
        rows.push([`chainfs compare, ${size}, 1% of blocks differ (${p.differing} blocks, all listed)`, `${ours.toFixed(2)} s`, '>= 1.5x qemu-img compare']);
        rows.push(['  qemu-img compare of exported flat images (stops at the first difference)', `${qemu.toFixed(2)} s`, x(qemu, ours)]);
        rows.push(['  cmp -l of exported flat images (lists every byte)', `${cmpl.toFixed(2)} s`, x(cmpl, ours)]);
        rows.push(['  cmp -l of the two mounted views', `${cmplMount.toFixed(2)} s`, x(cmplMount, ours)]);
        rows.push([`chainfs compare --snapshot base, ${size}, identical (everything read)`, `${oursSame.toFixed(2)} s`, '']);
        rows.push(['  qemu-img compare of the two base files (everything read)', `${qemuSame.toFixed(2)} s`, x(qemuSame, oursSame)]);
        rows.push(['  qemu-img compare of the two mounted base views', `${qemuSameMount.toFixed(2)} s`, x(qemuSameMount, oursSame)]);
      } finally {
        for (const mp of [mpA, mpB]) unmount(mp);
      }
    }
  } finally {
    if (!args.keep) fs.rmSync(args.root, { recursive: true, force: true });
  }
  const table = ['| what | measured | target / ratio |', '|---|---|---|', ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
  process.stdout.write(`${table}\n\n${JSON.stringify(results)}\n`);
}

main();

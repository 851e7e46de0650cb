/**
 * `make bench`'s rows for issue #12 (backups without restoring), side by
 * side on the same targets (bench/backup-workload.ts):
 *
 * - lz4: `chainfs export --format raw` of the backup in a local directory
 *   against the bound reproduced here (`lz4 -dc` of every referenced block
 *   file, `xargs -P2`, each written at its offset with `dd conv=notrunc`,
 *   then `sync` of the image) and against Longhorn's own restore, quoted
 *   from the issue (its code cannot be built here: longhorn-engine v1.7.0
 *   needs Go >= 1.22, Debian has 1.19 and there is no Go module proxy);
 * - S3 on loopback: the same export from s3rver (started here on
 *   127.0.0.1, a free port, stopped by its pid) against the directory one;
 * - gzip: the same backup in gzip, against `gzip -dc` the same way and the
 *   quoted restore;
 * - verify: `chainfs verify` against `lz4 -dc | sha512sum` of every block, -P2;
 * - 1 TiB: a backup whose cfg lists 500,000 blocks: `chainfs mount` until a
 *   4 KiB read at a random offset returns, the daemon's peak RSS, and the
 *   GETs s3rver logs for one random 4 KiB read of the mounted image on S3.
 *
 * Every export and bound output is compared with expected.raw after its
 * warm-up run. Prints a markdown table; writes
 * bench/results/<date>-<size>-backup.md and .json.
 *
 *   node dist/bench/bench/backup.js [--size 4G] [--runs 3] [--seed 1]
 *     [--only lz4,gzip,verify,s3,1t] [--root /var/tmp/chainfs-bench]
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { type S3Server, s3Env, startS3rver, uploadDir } from '../test/helpers/backupstore-s3';
import { BACKUP, BUCKET, type BackupWorkload, T1_BACKUP, T1_BLOCKS, T1_SIZE, T1_VOLUME, VOLUME, dropUpload, ensureBackupWorkload,
  t1BlockBytes, upload, uploaded } from './backup-workload';
import { describeMachine } from './machine';
import { NotAvailable, repeat } from './measure';
import { ChainfsMount, memoryOf } from './mounts';
import { Cleanup, check, remove, run } from './proc';
import { Prng } from './random';
import { clearDeadRuns, commonOptions, needSpace, projectRoot, writeReport } from './report';
import { type Named, line, measureRow, ok, q, report, sameBytes, seconds, shSeconds } from './suite';
import type { Line, Row } from './table';

const GiB = 1024 ** 3;
const GROUPS = ['lz4', 's3', 'gzip', 'verify', '1t'] as const;
type Group = typeof GROUPS[number];

/** Longhorn's restore of the issue's 4 GiB backup on this kind of machine (issue #12, "Performance"). */
const LONGHORN_S_PER_4GIB = { lz4: 14, gzip: 29 };
const ISSUE_SIZE = 4 * GiB;

const started = Date.now();
/** Progress on stderr, with the seconds since the start (the rows' time budget). */
const log = (msg: string) => process.stderr.write(`bench [${((Date.now() - started) / 1000).toFixed(0)} s]: ${msg}\n`);

interface Ctx {
  chainfs: string;
  w: BackupWorkload;
  runDir: string;
  runs: number;
  cleanup: Cleanup;
  log: (msg: string) => void;
  s3?: S3Server;
}

const s3Url = (prefix: string, backup: string, volume: string) =>
  `s3://${BUCKET}@us-east-1/${prefix}/?backup=${backup}&volume=${volume}`;

/** The bound's script: decompress every listed block with `tool -dc`, two at a time, each into OUT at its offset; then sync OUT. */
function boundScript(tool: 'lz4' | 'gzip', list: string, out: string, size: number): string {
  const each = 'o=$1; shift; while [ $# -ge 2 ]; do '
    + `${tool} -dc "$2" | dd of="$o" bs=2M seek=$(($1 / 2097152)) conv=notrunc iflag=fullblock status=none || exit 255; shift 2; done`;
  return `truncate -s ${size} ${q(out)} && xargs -P2 -n 32 bash -c ${q(each)} _ ${q(out)} < ${q(list)} && sync ${q(out)}`;
}

/** The quoted Longhorn restore as a table line: one value, scaled from 4 GiB to this size. */
function quoted(method: 'lz4' | 'gzip', size: number): Line {
  const s = (LONGHORN_S_PER_4GIB[method] * size) / ISSUE_SIZE;
  const scaled = size === ISSUE_SIZE ? '' : `, scaled to ${(size / GiB).toFixed(size < GiB ? 2 : 0)} GiB`;
  return line(`Longhorn's restore, QUOTED from issue #12, not measured here: ${LONGHORN_S_PER_4GIB[method]} s per 4 GiB${scaled}`, 's', { values: [s] }, size);
}

async function exportRows(c: Ctx, groups: Set<Group>): Promise<Row[]> {
  const { w } = c;
  const out = path.join(c.runDir, 'out.raw');
  const fresh = async () => {
    remove(out);
    await check(['sync']);
  };
  const matches = () => sameBytes(out, w.expected, 'the output', 'expected.raw');
  const exportOf = (source: string, ...sel: string[]) => () =>
    seconds('chainfs export', [c.chainfs, 'export', source, ...sel, out, '--format', 'raw', '--quiet']);
  const rows: Row[] = [];

  if (groups.has('lz4') || groups.has('s3')) {
    const measures: Named[] = [
      { label: '`chainfs export --format raw`, directory target', before: fresh, once: exportOf(w.targets.lz4, '--volume', VOLUME, '--backup', BACKUP), verify: matches },
      { label: '`lz4 -dc` of every block, `xargs -P2`, `dd` at its offset, `sync`', before: fresh,
        once: () => shSeconds('lz4 bound', boundScript('lz4', w.blockLists.lz4, out, w.size)), verify: matches },
    ];
    if (groups.has('s3') && c.s3) {
      measures.push({ label: '`chainfs export --format raw`, s3:// (s3rver on 127.0.0.1)', before: fresh,
        once: exportOf(s3Url('lz4', BACKUP, VOLUME)), verify: matches });
    }
    const [dir, bound, s3] = await measureRow(c, 'backup export, lz4', 's', measures, w.size);
    rows.push({
      title: 'backup export raw, lz4', subject: dir, anchors: [
        { line: bound, target: 0.8, targetText: '≥ 0.8× (the bound)' },
        { line: quoted('lz4', w.size), target: 1.5, targetText: '≥ 1.5× (quoted)' },
      ],
    });
    if (s3) rows.push({ title: 'backup export raw, lz4, S3 on loopback', subject: s3, anchors: [{ line: dir, target: 0.8 }] });
  }

  if (groups.has('gzip')) {
    const [gz, bound] = await measureRow(c, 'backup export, gzip', 's', [
      { label: '`chainfs export --format raw`, directory target', before: fresh, once: exportOf(w.targets.gzip, '--volume', VOLUME, '--backup', BACKUP), verify: matches },
      { label: '`gzip -dc` of every block, `xargs -P2`, `dd` at its offset, `sync`', before: fresh,
        once: () => shSeconds('gzip bound', boundScript('gzip', w.blockLists.gzip, out, w.size)), verify: matches },
    ], w.size);
    rows.push({
      title: 'backup export raw, gzip', subject: gz, anchors: [
        { line: bound, note: 'the bound (no goal in the issue)' },
        { line: quoted('gzip', w.size), target: 1.5, targetText: '≥ 1.5× (quoted)' },
      ],
    });
  }
  await fresh();
  return rows;
}

async function verifyRows(c: Ctx): Promise<Row[]> {
  const { w } = c;
  const sums = path.join(c.runDir, 'sums.txt');
  const files = w.blockLists.lz4;
  const each = 'for f; do lz4 -dc "$f" | sha512sum || exit 255; done';
  let verdict = '';
  const [chainfs, bound] = await measureRow(c, 'backup verify, lz4', 's', [
    {
      label: '`chainfs verify`, directory target',
      once: async () => {
        const r = await run([c.chainfs, 'verify', w.targets.lz4], { stdout: 'pipe' });
        if (r.code !== 0) throw new Error(`chainfs verify exit ${r.code}: ${r.stdout.trim().split('\n').pop()}`);
        verdict = r.stdout;
        return r.seconds;
      },
      verify: async () => {
        // Every block checked, none bad: what it prints last.
        if (!verdict.includes(`${w.offsets.length} distinct blocks checked`) || !/^result: clean$/m.test(verdict)) {
          throw new NotAvailable(`chainfs verify said: ${verdict.trim().split('\n').slice(-2).join(' ')}`);
        }
      },
    },
    {
      label: '`lz4 -dc | sha512sum` of every block, `xargs -P2`',
      once: () => shSeconds('lz4 | sha512sum', `cut -d' ' -f2 ${q(files)} | xargs -P2 -n 32 bash -c ${q(each)} _ > ${q(sums)}`),
      verify: async () => {
        // Each plain block's sha512 starts with its file's name (the block's checksum).
        const got = new Set(fs.readFileSync(sums, 'utf8').trim().split('\n').map((l) => l.slice(0, 64)));
        const want = fs.readFileSync(files, 'utf8').trim().split('\n').map((l) => path.basename(l).replace(/\.blk$/, ''));
        if (got.size !== want.length || want.some((s) => !got.has(s))) throw new NotAvailable('the sums do not match the block names');
      },
    },
  ], w.size);
  remove(sums);
  return [{ title: 'backup verify, lz4', subject: chainfs, anchors: [{ line: bound, note: 'the bound (no goal in the issue)' }] }];
}

/** A random 4 KiB page of a block the 1 TiB backup lists. */
function randomPage(rng: Prng, offsets: number[]): number {
  return offsets[rng.below(offsets.length)] + rng.below(2 * 1024 * 1024 / 4096) * 4096;
}

/** `dd iflag=direct` of the 4 KiB page at `offset` of `file` into `into`; throws unless it holds the expected bytes. */
async function readPage(file: string, offset: number, into: string, seed: number): Promise<void> {
  await ok('dd', run(['dd', `if=${file}`, `of=${into}`, 'bs=4k', 'count=1', `skip=${offset / 4096}`, 'iflag=direct', 'status=none']));
  const got = fs.readFileSync(into);
  const block = offset - (offset % (2 * 1024 * 1024));
  const want = t1BlockBytes(seed, block).subarray(offset - block, offset - block + 4096);
  if (!got.equals(want)) throw new NotAvailable(`the 1 TiB backup's 4 KiB at ${offset} has the wrong bytes`);
}

async function t1Rows(c: Ctx): Promise<Row[]> {
  const { w } = c;
  const runs = Math.max(5, c.runs);
  const imgOf = (m: ChainfsMount, volume: string, backup: string) => path.join(m.mountPoint, 'volumes', volume, 'backups', `${backup}.img`);
  const page = path.join(c.runDir, 'page');
  const rng = new Prng(w.seed, 't1-reads');
  c.log(`1 TiB backup, ${T1_BLOCKS} blocks: mount until a random 4 KiB read returns (${runs} runs)`);
  const m = new ChainfsMount(c.chainfs, w.t1, path.join(c.runDir, 'mnt-1t'), c.cleanup);
  const rss: number[] = [];
  const mount = await repeat({
    before: () => m.unmount(),
    once: async () => {
      const offset = randomPage(rng, w.t1Offsets);
      const t0 = process.hrtime.bigint();
      await m.mount();
      await readPage(imgOf(m, T1_VOLUME, T1_BACKUP), offset, page, w.seed);
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      rss.push(memoryOf(m.daemonPid()).peak / 1e6);
      return ms;
    },
  }, runs);
  await m.unmount();
  const rows: Row[] = [
    { title: '1 TiB backup, 500,000 blocks: mount', subject: report(c, line('`chainfs mount` until a 4 KiB read at a random offset returns', 'ms', mount)),
      anchors: [], limit: { max: 2000, text: '< 2 s' } },
    { title: '1 TiB backup, 500,000 blocks: mount', subject: report(c, line('daemon peak RSS after that read', 'MB', mount.error ? mount : { values: rss.slice(-runs) })),
      anchors: [], limit: { max: 200, text: '< 200 MB' } },
  ];

  if (c.s3) {
    const s3 = c.s3;
    c.log('1 TiB backup on S3: GETs of one random 4 KiB read');
    const ms3 = new ChainfsMount(c.chainfs, s3Url('t1', T1_BACKUP, T1_VOLUME), path.join(c.runDir, 'mnt-1t-s3'), c.cleanup);
    // s3rver's log line of a request has lost its method (its logger cuts the first 16 characters), but the SDK
    // names the operation in the query: `x-id=GetObject`.
    const gets = () => s3.log.filter((l) => l.includes('x-id=GetObject')).length;
    const BLOCK = 2 * 1024 * 1024;
    let opened = -1;
    const getsOf = await repeat({
      before: async () => {
        // A fresh mount, its image opened by a first read elsewhere (the cfg's GET, and that block's).
        await ms3.unmount();
        await ms3.mount();
        const first = randomPage(rng, w.t1Offsets);
        opened = Math.floor(first / BLOCK) % 64;
        await readPage(imgOf(ms3, T1_VOLUME, T1_BACKUP), first, page, w.seed);
      },
      once: async () => {
        // A block of another of the 64 distinct block files than the one the first read fetched (that one is cached).
        let offset = randomPage(rng, w.t1Offsets);
        while (Math.floor(offset / BLOCK) % 64 === opened) offset = randomPage(rng, w.t1Offsets);
        const before = gets();
        await readPage(imgOf(ms3, T1_VOLUME, T1_BACKUP), offset, page, w.seed);
        await new Promise((r) => setTimeout(r, 200)); // s3rver logs after it answers
        return gets() - before;
      },
    }, c.runs);
    await ms3.unmount();
    rows.push({ title: '1 TiB backup, 500,000 blocks: on S3', subject: report(c, line('GETs s3rver logged for one random 4 KiB read of the mounted image', 'GETs', getsOf)),
      anchors: [], limit: { min: 1, max: 2, text: 'exactly 1' } });
  }
  remove(page);
  return rows;
}

async function startS3(c: Omit<Ctx, 's3'>, root: string): Promise<S3Server> {
  const script = path.join(root, 'node_modules', 's3rver', 'bin', 's3rver.js');
  const fresh = !uploaded(c.w);
  if (fresh) dropUpload(c.w);
  fs.mkdirSync(c.w.s3rverData, { recursive: true });
  const s3 = await startS3rver(c.w.s3rverData, BUCKET, script);
  c.cleanup.add(`stop s3rver ${s3.pid}`, () => {
    try {
      process.kill(s3.pid, 'SIGKILL');
    } catch {
      // gone
    }
  });
  c.log(`s3rver on ${s3.endpoint} (pid ${s3.pid})`);
  if (fresh) {
    const t0 = Date.now();
    c.log('uploading the lz4 target and the 1 TiB one to s3rver through the SDK');
    await upload(c.w, s3.endpoint, uploadDir);
    c.log(`  uploaded (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  }
  Object.assign(process.env, s3Env(s3.endpoint)); // for every chainfs this process starts
  return s3;
}

async function main(): Promise<void> {
  const o = commonOptions(process.argv.slice(2));
  const groups = new Set<Group>((o.only ?? [...GROUPS]) as Group[]);
  for (const g of groups) if (!GROUPS.includes(g)) throw new Error(`--only: unknown group ${g} (groups: ${GROUPS.join(', ')})`);
  const root = projectRoot();
  const cleanup = new Cleanup();
  cleanup.installSignalHandlers();
  fs.mkdirSync(o.root, { recursive: true });
  o.root = fs.realpathSync(o.root);
  clearDeadRuns(o.root);
  const cachedDir = path.join(o.root, `backup-${o.label}-${o.seed}`);
  needSpace(o.root, (fs.existsSync(path.join(cachedDir, 'stamp-t1.json')) ? 1.1 : 3.5) * o.size, `the ${o.label} backup rows`);
  const runDir = path.join(o.root, `run-${process.pid}`);
  fs.mkdirSync(runDir);
  cleanup.add('remove the run directory', () => remove(runDir));

  const machine = describeMachine(root, o.root);
  log(`backups, ${o.label}, seed ${o.seed}, ${o.runs} runs, groups ${[...groups].join(',')}; load average ${machine.load}`);
  if (os.loadavg()[0] > 0.5) log(`warning: the machine is busy (load ${machine.load}): timings will be noisy`);
  const w = await ensureBackupWorkload(o.root, o.label, o.size, o.seed, log);
  const c: Ctx = { chainfs: path.join(root, 'bin', 'chainfs'), w, runDir, runs: o.runs, cleanup, log };
  if (groups.has('s3') || groups.has('1t')) c.s3 = await startS3(c, root);

  const rows: Row[] = [];
  rows.push(...(await exportRows(c, groups)));
  if (groups.has('verify')) rows.push(...(await verifyRows(c)));
  if (groups.has('1t')) rows.push(...(await t1Rows(c)));
  await c.s3?.stop();

  const blocks = w.offsets.length;
  const lz4Bytes = dirBytes(w.targets.lz4);
  const gzBytes = dirBytes(w.targets.gzip);
  writeReport(root, 'backup', o.label, machine, {
    title: `backups (issue #12), ${o.label}`,
    bullets: [
      `- **Workload:** a local-directory backup target holding one backup of a ${o.label} volume (seed ${o.seed}), written by the tests' target builder: `
      + `${blocks} of its ${o.size / (2 * 1024 * 1024)} 2 MiB blocks hold data (${(100 * blocks * 2 * 1024 * 1024 / o.size).toFixed(0)}%), `
      + 'their 4 KiB pages alternating random bytes and zeros or a repeated word; '
      + `lz4: ${(lz4Bytes / 2 ** 20).toFixed(0)} MiB of block files (${((blocks * 2 * 1024 * 1024) / lz4Bytes).toFixed(2)}:1), `
      + `gzip: ${(gzBytes / 2 ** 20).toFixed(0)} MiB (${((blocks * 2 * 1024 * 1024) / gzBytes).toFixed(2)}:1). `
      + 'S3: the lz4 target uploaded through the SDK to s3rver 3.7.1 on 127.0.0.1 (it runs on the same cores). '
      + `1 TiB: a volume of ${T1_SIZE / 2 ** 40} TiB whose backup cfg lists ${T1_BLOCKS.toLocaleString('en')} blocks (64 distinct block files), in a directory and on s3rver.`,
      `- **Method:** each measure runs once to warm up (its output compared with the expected image, written from the plain blocks), then ${o.runs} times, `
      + `a row's measures taking turns run by run: median and min–max; the 1 TiB mount ${Math.max(5, o.runs)} times, each a fresh mount. `
      + 'Exports start from no output after `sync`; chainfs fsyncs its output, so the bounds end with `sync FILE`. Page cache warm. '
      + 'The bounds: every block file the cfg lists, `xargs -P2 -n 32`, each decompressed by the tool and written at its offset with '
      + '`dd bs=2M seek=N conv=notrunc` into a file truncated to the volume size. '
      + 'GETs: lines s3rver logged during one `dd iflag=direct bs=4k count=1` of the mounted image, after a first read elsewhere opened it (its cfg). '
      + 'GB/s and MB are decimal; rate = volume size / time.',
      '- **Longhorn\'s restore is QUOTED, not measured:** longhorn-engine v1.7.0 needs Go ≥ 1.22 and this machine has Debian\'s 1.19 with no Go module proxy; '
      + 'issue #12 measured it on this kind of machine with its real code: about 14 s (lz4) and 29 s (gzip) for the 4 GiB backup, '
      + 'excluding a final fsync of about 4 s' + (o.size === ISSUE_SIZE ? '.' : '; scaled linearly to this size.'),
    ],
    rows,
    notes: [
      'The QUOTED lines are the only anchors not measured side by side: the issue measured Longhorn\'s restore on another day, on a quiet machine; '
      + `this run started at load ${machine.load.split(';')[0]}. Their ratios are indications; the bounds' and S3's are this run's.`,
    ],
  }, { size: o.size, seed: o.seed, runs: o.runs }, log);
}

function dirBytes(dir: string): number {
  let n = 0;
  for (const f of fs.readdirSync(dir, { recursive: true }).map(String)) {
    const st = fs.statSync(path.join(dir, f));
    if (st.isFile()) n += st.size;
  }
  return n;
}

main().then(() => process.exit(0), (e: unknown) => {
  process.stderr.write(`bench: ${(e as Error).message}\n`);
  process.exit(1);
});


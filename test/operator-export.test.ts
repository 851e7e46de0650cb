/**
 * The operator's conventions of `export` and `cat` (issue #14 items 1 and
 * 4), through the real CLI: progress on stderr without a terminal (-p),
 * the summary line unless -q, the same progress total (the view's size)
 * for raw and qcow2, no ETA at 0%; `-` as stdout, an existing directory as
 * OUT, the Longhorn layout's <name>-<uuid> and the backing file's mode.
 * Bytes are checked against the qemu oracle.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CHAINFS, chainfs } from './helpers/cli';
import { buildOracle, type Oracle } from './helpers/oracle';
import { buildReplica, type BuiltReplica } from './helpers/replica-builder';
import { noBacking } from './helpers/scenarios';

const breathe = () => new Promise<void>((resolve) => setImmediate(resolve));
afterEach(breathe);

let tmp: string;
let built: BuiltReplica;
let oracle: Oracle;

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-op-export-'));
  built = buildReplica(noBacking, tmp);
  oracle = buildOracle(noBacking, tmp);
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const headOracle = () => fs.readFileSync(oracle.views.get(built.views[0].file)!);
const SIZE = '16.0 MiB';
/** `export    42% (6.7 MiB / 16.0 MiB...)` */
const LINE = /^(export|checksum|cat) +(\d+)% \(([^/]+) \/ ([^,)]+)(, .*)?\)$/;

function progressLines(stderr: string): RegExpExecArray[] {
  return stderr.split('\n').map((l) => LINE.exec(l)).filter((m): m is RegExpExecArray => m !== null);
}

describe('progress and summary without a terminal', () => {
  for (const format of ['raw', 'qcow2']) {
    it(`-p prints percentage lines to 100% of the view's size (${format}), then the summary`, () => {
      const out = path.join(tmp, `p.${format}`);
      const r = chainfs(['export', built.dir, out, '--format', format, '-p']);
      expect(r.code).toBe(0);
      const lines = progressLines(r.stderr).filter((m) => m[1] === 'export');
      expect(lines.length).toBeGreaterThanOrEqual(2);
      expect(lines.every((m) => m[4] === SIZE)).toBe(true); // the same total for every format
      expect(lines[lines.length - 1][2]).toBe('100');
      expect(lines[lines.length - 1][3]).toBe(SIZE);
      const percents = lines.map((m) => Number(m[2]));
      expect([...percents].sort((a, b) => a - b)).toEqual(percents);
      for (const m of lines) if (m[2] === '0') expect(m[5] ?? '').not.toMatch(/ETA/);
      expect(r.stderr).not.toMatch(/ETA 0s/);
      const last = r.stderr.trim().split('\n').pop()!;
      expect(last).toMatch(new RegExp(`^exported volume\\.img to ${out.replace(/[.]/g, '\\.')}: ${format}, 16\\.0 MiB virtual, .* allocated, [0-9.]+ s$`));
    });
  }

  it('without -p and without a terminal: the summary line only; -q: nothing', () => {
    const out = path.join(tmp, 'plain.raw');
    const r = chainfs(['export', built.dir, out]);
    expect(r.code).toBe(0);
    expect(r.stderr.trim().split('\n')).toEqual([expect.stringMatching(/^exported volume\.img to .*plain\.raw: raw, 16\.0 MiB virtual/)]);
    const q = chainfs(['export', built.dir, path.join(tmp, 'quiet.raw'), '-q']);
    expect(q.code).toBe(0);
    expect(q.stderr).toBe('');
    expect(fs.readFileSync(path.join(tmp, 'quiet.raw')).equals(headOracle())).toBe(true);
    expect(chainfs(['export', built.dir, path.join(tmp, 'pq.raw'), '-p', '-q']).code).toBe(2);
  });

  it('cat -p: the bytes on stdout, progress lines on stderr; without -p stderr stays empty', () => {
    const r = chainfs(['cat', built.dir, '-p']);
    expect(r.code).toBe(0);
    expect(r.stdout.equals(headOracle())).toBe(true);
    const lines = progressLines(r.stderr);
    expect(lines.map((m) => m[1])).toEqual(lines.map(() => 'cat'));
    expect(lines[lines.length - 1][2]).toBe('100');
    const plain = chainfs(['cat', built.dir]);
    expect(plain.stderr).toBe('');
    expect(chainfs(['cat', '--help']).stdout.toString()).toMatch(/-p, --progress/);
    expect(chainfs(['export', '--help']).stdout.toString()).toMatch(/-p, --progress[\s\S]*-q, --quiet/);
  });
});

describe('outputs', () => {
  it('OUT - writes the raw view to stdout, with the summary on stderr', () => {
    const r = chainfs(['export', built.dir, '-', '--snapshot', 'user-snap-2']);
    expect(r.code).toBe(0);
    const snap = built.views.find((v) => v.snapshot === 'user-snap-2')!;
    expect(r.stdout.equals(fs.readFileSync(oracle.views.get(snap.file)!))).toBe(true);
    expect(r.stderr).toMatch(/^exported snapshots\/user-snap-2\.img to stdout: raw, 16\.0 MiB/m);
    expect(chainfs(['export', built.dir, '-', '--layout', 'longhorn']).code).toBe(2);
  });

  it('on a terminal: the bar, with no ETA before anything was measured, then the summary', () => {
    const out = path.join(tmp, 'tty.raw');
    // `script` runs the command on a pseudo-terminal: stderr is a terminal.
    const r = spawnSync('script', ['-qec', `${CHAINFS} export ${built.dir} ${out}`, '/dev/null'], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status).toBe(0);
    const screen = r.stdout.replace(/\x1b\[[0-9;?]*[A-Za-z]|\x1b[78]/g, '\n');
    const frames = screen.split(/[\r\n]+/).filter((l) => l.startsWith('export   ['));
    expect(frames.length).toBeGreaterThan(0);
    expect(frames[frames.length - 1]).toMatch(/\] 100% \| 16\.0 MiB \/ 16\.0 MiB \|/);
    for (const f of frames.filter((x) => /\] 0% /.test(x))) expect(f).toMatch(/ETA --$/);
    expect(screen).not.toMatch(/ETA 0s/);
    expect(screen).toMatch(/exported volume\.img to .*tty\.raw: raw, 16\.0 MiB virtual/);
    expect(fs.readFileSync(out).equals(headOracle())).toBe(true);
  });

  it('OUT - refuses a terminal, as cat does', () => {
    // `script` gives the command a pseudo-terminal as stdout.
    const r = spawnSync('script', ['-qec', `${CHAINFS} export ${built.dir} -`, '/dev/null'], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(/refusing to write a binary image to a terminal/);
  });

  it('an existing directory as OUT receives <view name>.<format>, as cp does', () => {
    const dir = fs.mkdtempSync(path.join(tmp, 'into-'));
    const r = chainfs(['export', built.dir, dir, '--snapshot', 'user-snap-2', '--format', 'qcow2']);
    expect(r.code).toBe(0);
    expect(fs.readdirSync(dir)).toEqual(['no-backing-user-snap-2.qcow2']);
    expect(r.stderr).toContain(`to ${path.join(dir, 'no-backing-user-snap-2.qcow2')}:`);
    const raw = chainfs(['export', built.dir, dir]);
    expect(raw.code).toBe(0);
    expect(fs.readFileSync(path.join(dir, 'no-backing.raw')).equals(headOracle())).toBe(true);
    // a second time: the derived name exists; --overwrite as for any OUT
    expect(chainfs(['export', built.dir, dir, '-q']).stderr).toMatch(/no-backing\.raw: already exists; pass --overwrite/);
  });

  it('--layout longhorn into an existing directory: <view name>-<uuid> inside it', () => {
    const dir = fs.mkdtempSync(path.join(tmp, 'lh-into-'));
    const r = chainfs(['export', built.dir, dir, '--layout', 'longhorn', '--snapshot', 'user-snap-2', '--json', '-q']);
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout.toString());
    expect(fs.readdirSync(dir)).toEqual([`no-backing-user-snap-2-${j.backingCfg.uuid}`]);
    expect(j.backingCfg.name).toBe(`/data/backing-images/no-backing-user-snap-2-${j.backingCfg.uuid}/backing`);
    const snap = built.views.find((v) => v.snapshot === 'user-snap-2')!;
    expect(fs.readFileSync(j.path).equals(fs.readFileSync(oracle.views.get(snap.file)!))).toBe(true);
  });

  it('--layout longhorn: <name>-<uuid> when OUT has no uuid, backing 0644 as the manager leaves it, backingCfg an object', () => {
    const dir = fs.mkdtempSync(path.join(tmp, 'layout-'));
    const r = chainfs(['export', built.dir, path.join(dir, 'golden'), '--layout', 'longhorn', '--json']);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout.toString());
    const made = fs.readdirSync(dir);
    expect(made).toEqual([`golden-${j.backingCfg.uuid}`]);
    expect(j.backingCfg.uuid).toMatch(/^[0-9a-f]{8}$/);
    expect(j.backingCfg.name).toBe(`/data/backing-images/${made[0]}/backing`);
    expect(j.out).toBe(path.join(dir, made[0]));
    expect(j.warnings).toEqual([expect.objectContaining({ code: 'uuid-added' })]);
    const cfgOnDisk = JSON.parse(fs.readFileSync(path.join(dir, made[0], 'backing.cfg'), 'utf8'));
    expect(j.backingCfg).toEqual(cfgOnDisk);
    expect(fs.statSync(path.join(dir, made[0], 'backing')).mode & 0o777).toBe(0o644);
    expect(fs.readFileSync(path.join(dir, made[0], 'backing')).equals(headOracle())).toBe(true);
  });
});

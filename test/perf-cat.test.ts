/**
 * `chainfs cat` onto every kind of stdout it takes its fast path for
 * (sendfile of plain layer runs, zeros and qcow2 compressed clusters written
 * through it), for behaviour only: a pipe, a file, a file opened O_APPEND
 * (where sendfile is refused and writes take over), /dev/null, and a reader
 * that goes away (`| head`: exit 141, nothing on stderr). Every output equals
 * the qemu oracle byte for byte.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CHAINFS, chainfsOk } from './helpers/cli';
import { buildOracle } from './helpers/oracle';
import { buildReplica } from './helpers/replica-builder';
import { SCENARIOS } from './helpers/scenarios';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-perf-cat-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Runs `chainfs cat ARGS` through bash with `redirect` (e.g. "> out"); returns its exit code and stderr. */
function catInShell(args: string[], redirect: string): { code: number | null; stderr: string } {
  const quoted = [CHAINFS, 'cat', ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  const r = spawnSync('bash', ['-c', `${quoted} ${redirect}`], { encoding: 'utf8' });
  return { code: r.status, stderr: r.stderr };
}

describe.each(['raw-backing', 'qcow2-compressed-backing', 'expand'].map((n) => [n, SCENARIOS.find((s) => s.name === n)!] as const))(
  'cat of %s', (name, scenario) => {
    it('to a pipe, a file, an O_APPEND file and /dev/null: exact, exit 0', () => {
      const built = buildReplica(scenario, tmp);
      const oracle = buildOracle(scenario, tmp);
      for (const v of built.views) {
        const args = [built.dir, ...(v.snapshot !== undefined ? ['--snapshot', v.snapshot] : [])];
        const want = fs.readFileSync(oracle.views.get(v.file)!);
        expect(Buffer.compare(chainfsOk(['cat', ...args]), want), `${name} ${v.file}: pipe`).toBe(0);
        const out = path.join(tmp, `${name}-out.raw`);
        expect(catInShell(args, `> '${out}'`).code).toBe(0);
        expect(Buffer.compare(fs.readFileSync(out), want), `${name} ${v.file}: file`).toBe(0);
        fs.writeFileSync(out, 'head');
        expect(catInShell(args, `>> '${out}'`).code).toBe(0);
        expect(Buffer.compare(fs.readFileSync(out), Buffer.concat([Buffer.from('head'), want])), `${name} ${v.file}: O_APPEND`).toBe(0);
        fs.rmSync(out);
        expect(catInShell(args, '> /dev/null')).toEqual({ code: 0, stderr: '' });
      }
    });
  });

describe('a reader that goes away', () => {
  it('cat | head -c 1000: exit 141, nothing on stderr', () => {
    const scenario = SCENARIOS.find((s) => s.name === 'raw-backing')!;
    const built = buildReplica(scenario, tmp);
    const r = catInShell([built.dir], '| head -c 1000 > /dev/null; exit ${PIPESTATUS[0]}');
    expect(r).toEqual({ code: 141, stderr: '' });
  });

  it('--help into a pipe whose reader has gone (stdout written by commander, not by cat): quiet, 141 or 0, never a stack trace', () => {
    for (let i = 0; i < 5; i++) {
      // `sleep` makes the reader gone before the help is written: the write must fail, every time.
      const r = spawnSync('bash', ['-c', `{ sleep 0.3; '${CHAINFS}' export --help; } | true; exit \${PIPESTATUS[0]}`], { encoding: 'utf8' });
      expect(r.stderr).toBe('');
      expect([0, 141]).toContain(r.status);
    }
  });
});

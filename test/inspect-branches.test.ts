/**
 * inspect after a revert (issue #14, item 7): the snapshots left off the
 * head's chain are listed oldest first, with the chain table's columns and
 * the snapshot of the head's chain their branch starts from. Expected
 * values by hand from the revert scenario: s1 <- s2 <- s3, then a revert
 * to s1 and s4 on it; s2 and s3 branch from s1.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { chainfs } from './helpers/cli';
import { buildReplica } from './helpers/replica-builder';
import { revert } from './helpers/scenarios';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-branches-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

it('off-chain snapshots: oldest first, with where they branch from', () => {
  const r = buildReplica(revert, tmp);
  const rep = JSON.parse(chainfs(['inspect', r.dir, '--json', '--no-contents']).stdout.toString());
  const off = rep.snapshots.filter((s: { inChain: boolean }) => !s.inChain).map((s: { name: string; branchesFrom: string | null }) => [s.name, s.branchesFrom]);
  expect(off).toEqual([['s2', 's1'], ['s3', 's1']]);
  const text = chainfs(['inspect', r.dir, '--no-contents']).stdout.toString();
  const table = text.slice(text.indexOf("snapshots not in the head's chain"));
  expect(table).toMatch(/FILE\s+KIND\s+SIZE\s+ALLOCATED\s+CREATED\s+FLAGS\s+BRANCHES FROM/);
  // Same Created time for all: the parent links order them (s2 before s3, its child).
  expect(table.indexOf('volume-snap-s2.img')).toBeLessThan(table.indexOf('volume-snap-s3.img'));
  expect(table).toMatch(/volume-snap-s3\.img .* s1\n/);
});

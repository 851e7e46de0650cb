/**
 * `chainfs diff SOURCE --from A [--to B]`: the 4 KiB-aligned ranges where
 * view B may differ from view A. Within one chain (A below B) the answer
 * comes from the layers' allocation alone and reads no data; `--exact`
 * then reads those ranges and keeps the blocks that really differ. Views
 * not on one chain (a revert's branches, two backups) are compared byte
 * for byte. Exit 0 when nothing changed, 1 when something did, 2 on
 * trouble, like diff(1).
 */
import { Command } from 'commander';
import { ChainfsError, oneLine } from '../errors';
import type { ChainOptions } from '../chain/chain';
import type { ChangedRange } from '../chain/diff';
import { namedView } from '../source/named';
import { formatBytes } from '../units';
import { errorCode, errorDocument } from './json';
import { addSourceOptions, exitAfterStdout, openCatalog, stdoutFailureExits, viewSelector, warn, type SourceCliOptions } from './common';

const EXIT_TROUBLE = 2;

interface DiffOptions extends SourceCliOptions {
  from: string;
  to?: string;
  json?: boolean;
  exact?: boolean;
}

export function diffCommand(): Command {
  return addSourceOptions(new Command('diff'), true)
    .description('list the ranges where a view (default: the head) may differ from an older one (--from); exit 1 if any')
    .argument('<source...>', 'a replica directory, data roots, a backup target, or v2 disks')
    .requiredOption('--from <view>', 'the older view: a snapshot (or, on a backup target, a backup)')
    .option('--to <view>', 'the newer view (default: the one the other options select, the head)')
    .option('--exact', 'read the ranges and keep only the 4 KiB blocks whose bytes differ')
    .option('--json', 'print [{start, length, reason}] (bytes, as qemu-img map --output=json)')
    .action(async (sources: string[], opts: DiffOptions) => {
      stdoutFailureExits(EXIT_TROUBLE);
      let changed: boolean;
      try {
        changed = await diff(sources, opts);
      } catch (e) {
        if (!(e instanceof ChainfsError)) throw e;
        process.stderr.write(`chainfs: ${oneLine(e.message)}\n`);
        if (opts.json) process.stdout.write(errorDocument(errorCode(e), oneLine(e.message)));
        process.exit(EXIT_TROUBLE);
      }
      exitAfterStdout(changed ? 1 : 0);
    });
}

async function diff(sources: string[], opts: DiffOptions): Promise<boolean> {
  const catalog = await openCatalog(sources, opts);
  try {
    const sel = viewSelector(opts);
    const cache: ChainOptions = {};
    const entryA = catalog.select(namedView(catalog, sel, opts.from));
    const entryB = catalog.select(namedView(catalog, sel, opts.to));
    const a = await entryA.open(cache);
    const b = await entryB.open(cache);
    for (const w of [...a.warnings, ...b.warnings]) warn(w);
    const { changedRanges } = await import('../chain/diff');
    const { ranges, oneChain } = await changedRanges(a.chain, b.chain, !!opts.exact);
    print(ranges, entryA.path, entryB.path, oneChain, !!opts.json, !!opts.exact);
    a.close();
    b.close();
    return ranges.length > 0;
  } finally {
    catalog.close();
  }
}

/** Allocation alone says "may differ"; --exact or a byte comparison says "differs". */
function print(ranges: ChangedRange[], from: string, to: string, oneChain: boolean, json: boolean, exact: boolean): void {
  const may = oneChain && !exact;
  if (json) {
    process.stdout.write(`[${ranges.map((r) => JSON.stringify(r)).join(',\n')}]\n`);
    return;
  }
  const lines = [`${'OFFSET'.padEnd(16)}${'LENGTH'.padEnd(16)}REASON`];
  for (const r of ranges) lines.push(`${`0x${r.start.toString(16)}`.padEnd(16)}${formatBytes(r.length).padEnd(16)}${r.reason}`);
  const total = ranges.reduce((s, r) => s + r.length, 0);
  const how = may ? ' (from the layers above it)' : oneChain ? ' (the layers above it, read and compared)' : ' (compared byte for byte: not one chain)';
  lines.push(`${ranges.length} range(s), ${formatBytes(total)} where ${to} ${may ? 'may differ' : 'differs'} from ${from}${how}`);
  process.stdout.write(`${lines.join('\n')}\n`);
}

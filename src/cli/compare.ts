/**
 * `chainfs compare A B`: where two views differ, every range at 4 KiB
 * granularity, with totals; exit 0 identical, 1 different, 2 trouble (as
 * `cmp`). A and B are named the way every command names a view:
 *
 *   compare DIR1 DIR2 [--snapshot S]                 two replica directories
 *   compare ROOT... --volume V --replica R1 --replica R2
 *                                                    two replicas of a volume on data roots
 *   compare ROOT... --volume V --replica R           that replica against the pick
 *   compare ROOT1 ROOT2 --volume V                   the pick of each root
 */
import { Command, Option } from 'commander';
import { compareImages, type CompareResult } from '../chain/compare';
import { ChainfsError, oneLine } from '../errors';
import type { Catalog, CatalogView, OpenedView } from '../source/catalog';
import { formatBytes } from '../units';
import { addSourceOptions, exitAfterStdout, fail, openCatalog, snapshotOption, stdoutFailureExits, usageFail, viewSelector, warn, type SourceCliOptions } from './common';
import { errorCode, errorDocument, jsonRequested } from './json';

export const EXIT_SAME = 0;
export const EXIT_DIFFERENT = 1;
export const EXIT_TROUBLE = 2;

type CompareCliOptions = Omit<SourceCliOptions, 'replica'> & { replica?: string[]; json?: boolean; workers?: number };

export function compareCommand(): Command {
  return addSourceOptions(new Command('compare'), false)
    .description('list every 4 KiB range where two views differ (exit 0 identical, 1 different, 2 trouble)')
    .argument('<source...>', 'two replica directories (or other sources), or data roots with --replica')
    .addOption(new Option('--replica <dir>', 'a replica of the volume; twice: compare the two; once: compare it with the pick')
      .argParser((v: string, prev: string[] | undefined) => [...(prev ?? []), v]))
    .addOption(snapshotOption())
    .option('--head <file>', "a head file that is not volume.meta's head")
    .option('--backup <name>', 'a backup of the volume (backup targets)')
    .option('--workers <n>', 'read and compare on N worker threads (default 0: this thread; helps on idle cores)', (v) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 0 || n > 64) usageFail(`--workers takes a whole number from 0 to 64, not ${JSON.stringify(v)}`);
      return n;
    })
    .option('--json', 'machine-readable output')
    .action(async (sources: string[], opts: CompareCliOptions) => {
      stdoutFailureExits(EXIT_TROUBLE);
      let code: number;
      try {
        code = await run(sources, opts);
      } catch (e) {
        const errno = e as NodeJS.ErrnoException;
        if (!(e instanceof ChainfsError) && !(typeof errno?.code === 'string' && errno.syscall)) fail(e); // a bug: exit 70
        // Trouble, as cmp says it: exit 2, one line (and the error document under --json).
        const message = oneLine(errno.message);
        if (jsonRequested()) process.stdout.write(errorDocument(errorCode(e), message));
        process.stderr.write(`chainfs: ${message}\n`);
        code = EXIT_TROUBLE;
      }
      exitAfterStdout(code);
    });
}

interface Side {
  source: string;
  view: CatalogView;
  opened: OpenedView;
}

async function run(sources: string[], opts: CompareCliOptions): Promise<number> {
  const replicas = opts.replica ?? [];
  const sel = viewSelector({ ...opts, replica: undefined });
  const catalogs: Catalog[] = [];
  const sides: Side[] = [];
  const open = async (c: Catalog, s: typeof sel) => {
    const view = c.select(s);
    const opened = await view.open({});
    for (const w of opened.warnings) if (!c.warnings.includes(w)) warn(w);
    sides.push({ source: c.label, view, opened });
  };
  if (replicas.length > 2) usageFail('compare takes --replica at most twice');
  if (replicas.length === 0 && sources.length !== 2) {
    usageFail(`compare needs two sources (got ${sources.length}), or data roots with --replica twice`);
  }
  try {
    if (replicas.length > 0) {
      const c = await openCatalog(sources, { ...opts, replica: undefined });
      catalogs.push(c);
      if (replicas.length === 2) {
        await open(c, { ...sel, replica: replicas[0] });
        await open(c, { ...sel, replica: replicas[1] });
      } else {
        // The replica first: its view's path (volumes/<volume>/...) names the volume whose pick is A.
        await open(c, { ...sel, replica: replicas[0] });
        const volume = sel.volume ?? /^volumes\/([^/]+)\//.exec(sides[0].view.path)?.[1];
        await open(c, { ...sel, volume });
        sides.reverse();
      }
    } else {
      for (const s of sources) {
        const c = await openCatalog([s], { ...opts, replica: undefined });
        catalogs.push(c);
        await open(c, sel);
      }
    }
    const started = process.hrtime.bigint();
    const r = await compareImages(sides[0].opened.chain, sides[1].opened.chain, { workers: opts.workers ?? 0 });
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    process.stdout.write(opts.json ? `${JSON.stringify(jsonOf(r, sides, seconds), null, 2)}\n` : text(r, sides));
    return r.identical ? EXIT_SAME : EXIT_DIFFERENT;
  } finally {
    for (const s of sides) s.opened.close();
    for (const c of catalogs) c.close();
  }
}

function jsonOf(r: CompareResult, sides: Side[], seconds: number): object {
  const side = (s: Side) => ({ source: s.source, view: s.view.path, size: s.opened.chain.size });
  return {
    identical: r.identical, a: side(sides[0]), b: side(sides[1]), differences: r.differences,
    differingBytes: r.differingBytes, differingRanges: r.differences.length, sizeA: r.sizeA, sizeB: r.sizeB,
    readBytes: r.readBytes, skippedBytes: r.skippedBytes, seconds,
  };
}

function text(r: CompareResult, sides: Side[]): string {
  const lines = sides.map((s, i) => `${i === 0 ? 'A' : 'B'}  ${s.source}: ${s.view.path} (${formatBytes(s.opened.chain.size)})`);
  if (r.sizeA !== r.sizeB) lines.push(`sizes differ: A ${r.sizeA} bytes, B ${r.sizeB} bytes (past the shorter one counts as different)`);
  const read = `${formatBytes(r.readBytes)} read from each; ${formatBytes(r.skippedBytes)} not read (zeros on both by their metadata, or the same file on both)`;
  if (r.identical) {
    lines.push(`identical (${read})`);
  } else {
    lines.push('START LENGTH (bytes)', ...r.differences.map((d) => `${d.start} ${d.length}`));
    lines.push(`differ: ${r.differences.length} range(s), ${r.differingBytes} bytes (${formatBytes(r.differingBytes)}); ${read}`);
  }
  return `${lines.join('\n')}\n`;
}

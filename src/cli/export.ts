/**
 * `chainfs export SOURCE OUT`: a view written as a standalone image (raw or
 * qcow2), with its SHA-512 printed the way sha512sum prints it, optionally
 * in Longhorn's backing-image directory layout. OUT follows cp and
 * qemu-img: `-` is stdout, an existing directory receives
 * `<view name>.<format>`. Progress goes to stderr (a bar on a terminal;
 * with -p, percentage lines elsewhere) and so does a one-line summary at
 * the end, unless -q.
 */
import * as path from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
// The materializer (workers, cli-progress) is loaded only when export runs:
// every other command starts faster without it.
import type { ExportRequest, ExportSummary } from '../materialize/export';
import type { Progress } from '../materialize/progress';
import {
  action, addSourceOptions, openSelectedView, sourceOptions, usageFail, viewSelector, warn, warningsSeen, type SourceCliOptions,
} from './common';
import { jsonWarning } from './json';
import { checkStdoutNotTerminal, streamView } from './stream';
import { formatBytes } from '../units';

/** The request's fields as commander parses them, plus what only the CLI uses. */
type ExportOptions = Omit<ExportRequest, 'sources' | 'sourceOptions' | 'selector' | 'out' | 'backing'> & SourceCliOptions
  & { quiet?: boolean; json?: boolean; progress?: boolean };

export function exportCommand(): Command {
  // --backing BASE before the sources' --no-backing, so that it has no default (commander's rule for a pair).
  return addSourceOptions(new Command('export')
    .option('--since <view>', 'only what changed since this older view (a snapshot; a backup on a backup target): '
      + 'a qcow2 overlay with --backing, or a sparse raw delta')
    .option('--backing <base>', 'with --since and --format qcow2: the overlay\'s backing file, an earlier full export of the --since view '
      + '(checked by size and sampled blocks; a relative path is recorded relative to OUT)'), true)
    .description('write a view as a standalone image (raw or qcow2), optionally as a Longhorn backing image directory')
    .usage('[options] <source...> <out>')
    .argument('<source...>', 'a replica directory, data roots, a backup target, or v2 disks; then OUT: a new file, '
      + '- for stdout (raw), or an existing directory (receives <view name>.<format>); '
      + 'for --layout longhorn a directory <name>-<uuid> (a uuid is added when the name has none)')
    .addOption(new Option('--format <format>', 'image format').choices(['raw', 'qcow2']).default('raw'))
    .addOption(new Option('--layout <layout>', 'file: OUT is the image; longhorn: OUT is a directory with backing and backing.cfg')
      .choices(['file', 'longhorn']).default('file'))
    .option('--cluster-size <size>', 'qcow2 cluster size: a power of two from 512 to 2M (default 64k)', parseClusterSize)
    .option('--compress', 'qcow2: store clusters deflate-compressed')
    .option('--checksum', 'print the SHA-512 of the output (default with --layout longhorn)')
    .option('--no-checksum', 'do not compute the SHA-512 (backing.cfg then has an empty currentChecksum)')
    .option('--overwrite', 'replace OUT if it exists')
    .option('-p, --progress', 'show progress on stderr even when it is not a terminal (percentage lines, like qemu-img convert -p)')
    .option('-q, --quiet', 'no progress and no summary line')
    .option('--json', 'print a JSON summary (docs/json.md) instead of the checksum line')
    .addHelpText('after', `
Conventions (like qemu-img convert and cp):
  progress      a bar on a terminal; -p prints percentage lines to a file or pipe; the total is the view's size
  summary       one line on stderr at the end (exported VIEW to OUT: format, size, allocated, seconds); -q: none
  OUT -         the view on stdout, raw (or qcow2 with --format qcow2); never to a terminal
  OUT a dir     writes <view name>.<format> inside it
  longhorn      OUT without a -<8 hex> suffix becomes OUT-<uuid> (backing.cfg agrees); backing is 0644
  --json        failures too: {"error": {"code", "message"}} on stdout (docs/json.md)

Examples:
  chainfs export /var/lib/longhorn/replicas/pvc-1-1a2b3c4d pvc-1.qcow2 --format qcow2 -p 2>export.log
  chainfs export REPLICA - --snapshot before-upgrade | ssh host 'cat > pvc-1.raw'
  chainfs export REPLICA /srv/exports/`)
    .action(action(async (args: string[], opts: ExportOptions) => {
      if (args.length < 2) usageFail('export needs a source and an output (OUT)');
      const sources = args.slice(0, -1);
      const out = args[args.length - 1];
      if (opts.format !== 'qcow2' && (opts.clusterSize !== undefined || opts.compress)) {
        usageFail('--cluster-size and --compress apply to --format qcow2 only');
      }
      if (opts.progress && opts.quiet) usageFail('give -p (--progress) or -q (--quiet), not both');
      const { progressFor } = await import('../materialize/progress');
      // On a terminal the bar shows unless -q; elsewhere only with -p.
      const bar = progressFor(process.stderr, !opts.quiet && (!!process.stderr.isTTY || !!opts.progress));
      if (out === '-') return toStdout(sources, opts, bar);
      await toFile(sources, out, opts, bar);
    }));
}

async function toFile(sources: string[], out: string, opts: ExportOptions, bar: Progress | undefined): Promise<void> {
  const { exportImage } = await import('../materialize/export');
  const { BACKING_FILE } = await import('../materialize/longhorn-layout');
  let summary: ExportSummary;
  try {
    summary = await exportImage({
      sources, sourceOptions: sourceOptions(opts), selector: viewSelector(opts), out, format: opts.format, layout: opts.layout,
      clusterSize: opts.clusterSize, compress: opts.compress,
      overwrite: opts.overwrite, force: opts.force, checksum: opts.checksum,
      since: opts.since, backing: typeof opts.backing === 'string' ? opts.backing : undefined,
    }, {
      warn: (m) => { bar?.stop(); warn(m); },
      progress: bar ? (p) => bar.update(p) : undefined,
      interrupted: (signal) => {
        bar?.stop();
        process.stderr.write(`chainfs: interrupted by ${signal}; the partial export was removed\n`);
      },
    });
  } finally {
    bar?.stop();
  }
  // As the user would name it: OUT as given, or the name derived inside it.
  const base = path.basename(summary.out);
  const shownOut = summary.out === path.resolve(out) ? out
    : path.join(path.dirname(summary.out) === path.resolve(out) ? out : path.dirname(out), base);
  const shown = opts.layout === 'longhorn' ? path.join(shownOut, BACKING_FILE) : shownOut;
  if (opts.json) {
    const doc = {
      ...summary,
      backingCfg: summary.backingCfg === null ? null : JSON.parse(summary.backingCfg) as object,
      warnings: warningsSeen.map(jsonWarning),
    };
    process.stdout.write(`${JSON.stringify(doc, null, 2)}\n`);
  } else if (summary.sha512) {
    process.stdout.write(sha512sumLine(summary.sha512, shown));
  }
  if (!opts.quiet) {
    process.stderr.write(`exported ${summary.view} to ${shown}: ` +
      `${summary.format}, ${formatBytes(summary.virtualSize)} virtual, ${formatBytes(summary.allocatedBytes)} allocated, ` +
      `${summary.seconds.toFixed(1)} s\n`);
  }
}

/** `export SOURCE -`: the raw view on stdout, as cat writes it, with export's progress and summary. */
async function toStdout(sources: string[], opts: ExportOptions, bar: Progress | undefined): Promise<void> {
  if (opts.layout !== 'file') usageFail('OUT - (stdout): --layout longhorn needs a directory');
  if (opts.compress) usageFail('OUT - (stdout): --compress needs an output file (compressed sizes are not known up front)');
  if (opts.json) usageFail('OUT - (stdout) carries the image: --json needs an output file');
  if (opts.checksum) usageFail('OUT - (stdout): pipe it through sha512sum for a checksum (--checksum needs an output file)');
  checkStdoutNotTerminal();
  const started = process.hrtime.bigint();
  const selected = await openSelectedView(sources, opts);
  try {
    selected.view.checkNotLive?.(opts.force ?? false, warn);
    if (opts.format === 'qcow2' || opts.since !== undefined) {
      const { streamDelta } = await import('../materialize/stream-export');
      await streamDelta(selected, opts.format, { since: opts.since, backing: typeof opts.backing === 'string' ? opts.backing : undefined,
        clusterSize: opts.clusterSize, selector: viewSelector(opts), progress: bar ? (done, total) => bar.update({ phase: 'export', done, total }) : undefined });
    } else {
      await streamView(selected.view.chain, process.stdout, bar, 'export');
    }
  } finally {
    bar?.stop();
    selected.close();
  }
  if (!opts.quiet) {
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    process.stderr.write(`exported ${selected.entry.path}${opts.since ? ` (changes since ${opts.since})` : ''} to stdout: ${opts.format}, ${formatBytes(selected.view.chain.size)} virtual, ${seconds.toFixed(1)} s\n`);
  }
}

/** `HEX  NAME` as sha512sum prints it, including its escaping of names with a backslash or newline. */
export function sha512sumLine(hex: string, name: string): string {
  if (!/[\\\n]/.test(name)) return `${hex}  ${name}\n`;
  return `\\${hex}  ${name.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}\n`;
}

function parseClusterSize(value: string): number {
  const m = /^(\d+)([kKmM]?)$/.exec(value.trim());
  const n = m ? Number(m[1]) * (m[2] === '' ? 1 : /k/i.test(m[2]) ? 1024 : 1024 * 1024) : NaN;
  if (!Number.isSafeInteger(n) || n < 512 || n > 2 * 1024 * 1024 || (n & (n - 1)) !== 0) {
    throw new InvalidArgumentError('a power of two from 512 to 2M (e.g. 512, 65536, 64k, 2M)');
  }
  return n;
}

/**
 * `chainfs export DIR OUT`: a view written as a standalone image (raw or
 * qcow2), with its SHA-512 printed the way sha512sum prints it, optionally
 * in Longhorn's backing-image directory layout.
 */
import * as path from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { ChainfsError } from '../errors';
// The materializer (workers, cli-progress) is loaded only when export runs:
// every other command starts faster without it.
import type { ExportRequest, ExportSummary } from '../materialize/export';
import { EXIT_USAGE, action, addSourceOptions, sourceOptions, viewSelector, warn, type SourceCliOptions } from './common';
import { formatBytes } from '../units';

/** The request's fields as commander parses them, plus what only the CLI uses. */
type ExportOptions = Omit<ExportRequest, 'sources' | 'sourceOptions' | 'selector' | 'out'> & SourceCliOptions & { quiet?: boolean; json?: boolean };

export function exportCommand(): Command {
  return addSourceOptions(new Command('export'), true)
    .description('write a view as a standalone image (raw or qcow2), optionally as a Longhorn backing image directory')
    .usage('[options] <source...> <out>')
    .argument('<source...>', 'a replica directory, data roots, a backup target, or v2 disks; then OUT, the output file (for --layout longhorn: a directory named <name>-<uuid>)')
    .addOption(new Option('--format <format>', 'image format').choices(['raw', 'qcow2']).default('raw'))
    .addOption(new Option('--layout <layout>', 'file: OUT is the image; longhorn: OUT is a directory with backing and backing.cfg')
      .choices(['file', 'longhorn']).default('file'))
    .option('--cluster-size <size>', 'qcow2 cluster size: a power of two from 512 to 2M (default 64k)', parseClusterSize)
    .option('--compress', 'qcow2: store clusters deflate-compressed')
    .option('--checksum', 'print the SHA-512 of the output (default with --layout longhorn)')
    .option('--no-checksum', 'do not compute the SHA-512 (backing.cfg then has an empty currentChecksum)')
    .option('--overwrite', 'replace OUT if it exists')
    .option('--quiet', 'no progress bar and no summary')
    .option('--json', 'print a JSON summary instead of the checksum line')
    .action(action(async (args: string[], opts: ExportOptions) => {
      if (args.length < 2) {
        process.stderr.write('chainfs: export needs a source and an output (OUT)\n');
        process.exit(EXIT_USAGE);
      }
      const sources = args.slice(0, -1);
      const out = args[args.length - 1];
      if (opts.format !== 'qcow2' && (opts.clusterSize !== undefined || opts.compress)) {
        throw new ChainfsError(undefined, '--cluster-size and --compress apply to --format qcow2 only');
      }
      const { exportImage } = await import('../materialize/export');
      const { BACKING_FILE } = await import('../materialize/longhorn-layout');
      const { ProgressBar } = await import('../materialize/progress');
      const bar = process.stderr.isTTY && !opts.quiet ? new ProgressBar(process.stderr) : undefined;
      let summary: ExportSummary;
      try {
        summary = await exportImage({
          sources, sourceOptions: sourceOptions(opts), selector: viewSelector(opts), out, format: opts.format, layout: opts.layout,
          clusterSize: opts.clusterSize, compress: opts.compress,
          overwrite: opts.overwrite, force: opts.force, checksum: opts.checksum,
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
      const shown = opts.layout === 'longhorn' ? path.join(out, BACKING_FILE) : out;
      if (opts.json) {
        process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
      } else if (summary.sha512) {
        process.stdout.write(sha512sumLine(summary.sha512, shown));
      }
      if (bar) {
        process.stderr.write(`exported ${summary.view} to ${shown}: ` +
          `${summary.format}, ${formatBytes(summary.size)}, ${formatBytes(summary.allocatedBytes)} allocated, ` +
          `${summary.seconds.toFixed(1)} s\n`);
      }
    }));
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

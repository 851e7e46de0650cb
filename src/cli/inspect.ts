/** `chainfs inspect SOURCE...`: every view the sources hold, their chains, allocation, state and warnings. */
import { Command } from 'commander';
import { action, addSourceOptions, openCatalog, type SourceCliOptions } from './common';

export function inspectCommand(): Command {
  return addSourceOptions(new Command('inspect'), false)
    .description('show what a source holds: chains, snapshots, allocation, backing images, replicas, backups, warnings')
    .argument('<source...>', 'a replica directory, data roots, a backup target, or v2 disks')
    .option('--json', 'machine-readable output')
    .action(action(async (sources: string[], opts: SourceCliOptions & { json?: boolean }) => {
      const catalog = await openCatalog(sources, opts, true);
      try {
        process.stdout.write(opts.json ? `${JSON.stringify(catalog.report(), null, 2)}\n` : catalog.render());
      } finally {
        catalog.close();
      }
    }));
}

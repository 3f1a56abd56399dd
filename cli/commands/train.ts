import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { s3ImageSource } from '../s3-images.ts';
import { defaultWeightsDir } from '../../pipeline/aws/wiring.ts';
import { openCommandStack } from '../stack.ts';
import { folderSource } from '../../training/dataset.ts';
import { parseRange, progressiveRanges, stages, type ProgressiveRanges } from '../../training/progressive.ts';
import { DEFAULT_TIME_BUDGET, train } from '../../training/train.ts';
import { parseNumber, table } from '../format.ts';
import { checkReadableFolder } from '../local-files.ts';
import { countProgress } from '../progress.ts';

interface TrainFlags {
  data: string;
  name: string;
  base: string;
  weights?: string;
  out?: string;
  val: number;
  seed: number;
  epochs?: number;
  maxEpochs: number;
  timeBudget: number;
  patience?: number;
  stages: number;
  progressive: boolean;
  headEpochs?: number;
  headPasses: number;
  unfreeze?: number;
  batchSize: number;
  lr?: number;
  headLr: number;
  minPerLabel: number;
  sizes?: string;
  randaug?: string;
  mixup?: string;
  dropout?: string;
  backend?: string;
  resume?: boolean;
  dryRun?: boolean;
}

export function registerTrainCommand(program: Command): void {
  program
    .command('train')
    .description(
      'train a model on your own labels (one folder per label): a head on frozen features, then fine-tuning with progressive learning; ' +
        'without --weights, the whole network from scratch',
    )
    .requiredOption('--data <dir|s3://bucket/prefix>', 'the images, one folder per label')
    .requiredOption('--name <name>', "the model's name, as tiers use it (model: NAME); not a variant name")
    .option('--base <variant>', 'the variant to train (b0…b7, v2-…, phi-X, custom-wW-dD-rR)', 'b0')
    .option('--weights <dir>', "the base's weights artifact (effitag weights fetch/import); without it: from scratch")
    .option('--out <dir>', 'where the model goes (default: the weights catalog, so tiers find it: <cache>/weights/NAME)')
    .option('--val <fraction>', 'held-out fraction of each label (stratified)', parseNumber('--val', 0.05, 0.5), 0.2)
    .option('--seed <n>', 'seed of the split, augmentation and initialisation', parseNumber('--seed', 0, 2 ** 31, true), 1)
    .option(
      '--epochs <n>',
      'a fixed schedule: epochs per progressive stage (0: head only); default: each stage until its held-out accuracy stops improving',
      parseNumber('--epochs', 0, 1000, true),
    )
    .option('--max-epochs <n>', 'early stopping: most epochs per stage', parseNumber('--max-epochs', 1, 1000, true), 40)
    .option(
      '--time-budget <seconds>',
      'early stopping: time for the whole run, shared out over the stages left (each stage trains at least one epoch)',
      parseNumber('--time-budget', 0, 7 * 86400),
      DEFAULT_TIME_BUDGET,
    )
    .option(
      '--patience <n>',
      'early stopping: epochs after the best held-out accuracy before a stage stops (default 5, the learning rate halved every 2 without a new best; the head phase 10, on its loss)',
      parseNumber('--patience', 1, 1000, true),
    )
    .option('--stages <n>', 'progressive learning stages', parseNumber('--stages', 1, 20, true), 4)
    .option('--no-progressive', 'every stage at full size and full regularisation (the baseline progressive learning is compared with)')
    .option(
      '--head-epochs <n>',
      'a fixed schedule for the head phase (default: until its held-out loss stops improving, at most 200)',
      parseNumber('--head-epochs', 1, 10000, true),
    )
    .option(
      '--head-passes <n>',
      'feature passes for the head: the images, then augmented copies',
      parseNumber('--head-passes', 1, 50, true),
      3,
    )
    .option(
      '--unfreeze <blocks>',
      "blocks fine-tuned, counted from the top (default: the last stage's)",
      parseNumber('--unfreeze', 0, 100, true),
    )
    .option('--batch-size <n>', 'images per training step', parseNumber('--batch-size', 1, 512, true), 16)
    .option('--lr <rate>', 'learning rate of the stages (default: 1e-4 fine-tuning, 1e-2 from scratch)', parseNumber('--lr', 0))
    .option('--head-lr <rate>', 'learning rate of the head', parseNumber('--head-lr', 0), 1e-3)
    .option('--min-per-label <n>', 'fewest readable images a label may have', parseNumber('--min-per-label', 2, 1e6, true), 10)
    .option('--sizes <from:to>', "image sizes ramped over the stages (default: the paper's, scaled to the variant)")
    .option('--randaug <from:to>', 'RandAugment magnitude ramp (0–30)')
    .option('--mixup <from:to>', 'Mixup alpha ramp')
    .option('--dropout <from:to>', 'classifier dropout ramp')
    .option('--backend <backend>', 'tfjs backend: tensorflow-gpu | tensorflow | wasm | cpu (default: the first that loads)')
    .option('--resume', 'continue after the last checkpoint in OUT/checkpoints')
    .option('--dry-run', 'print the stages and exit')
    .option('--json', 'print the result (the report included) as JSON')
    .action(async (opts: TrainFlags & { json?: boolean }, command: Command) => {
      const ranges: Partial<ProgressiveRanges> = {};
      if (opts.sizes) ranges.size = parseRange(opts.sizes, '--sizes');
      if (opts.randaug) ranges.randAugment = parseRange(opts.randaug, '--randaug');
      if (opts.mixup) ranges.mixup = parseRange(opts.mixup, '--mixup');
      if (opts.dropout) ranges.dropout = parseRange(opts.dropout, '--dropout');
      if (opts.dryRun) {
        const plan = stages(progressiveRanges(opts.base, ranges), opts.stages, opts.progressive);
        process.stdout.write(
          table(
            plan.map((s) => [s.index + 1, s.size, s.randAugment, s.mixup, s.dropout]),
            ['stage', 'size', 'RandAugment', 'Mixup α', 'dropout'],
          ),
        );
        return;
      }
      // A local --data folder that is not there is one line naming it, as for every path (was ENOENT … realpath).
      if (!opts.data.startsWith('s3://')) await checkReadableFolder(opts.data, '--data');
      // s3:// data is read from the stack --stack names (the embedded one by default).
      const conn = opts.data.startsWith('s3://') ? await openCommandStack(command) : undefined;
      try {
        const result = await train({
          source: conn ? s3ImageSource(conn.store, opts.data) : folderSource(resolve(opts.data)),
          name: opts.name,
          base: opts.base,
          weights: opts.weights && resolve(opts.weights),
          out: resolve(opts.out ?? join(defaultWeightsDir(), opts.name)),
          val: opts.val,
          seed: opts.seed,
          epochs: opts.epochs,
          maxEpochs: opts.maxEpochs,
          timeBudget: opts.timeBudget,
          patience: opts.patience,
          stages: opts.stages,
          progressive: opts.progressive,
          ranges,
          headEpochs: opts.headEpochs,
          headPasses: opts.headPasses,
          unfreezeBlocks: opts.unfreeze,
          batchSize: opts.batchSize,
          learningRate: opts.lr,
          headLearningRate: opts.headLr,
          minPerLabel: opts.minPerLabel,
          backend: opts.backend,
          resume: opts.resume,
          progress: () => countProgress(),
        });
        const out = resolve(opts.out ?? join(defaultWeightsDir(), opts.name));
        if (opts.json) {
          process.stdout.write(
            `${JSON.stringify({ name: opts.name, out, sha256: result.manifest.sha256, report: result.report }, null, 2)}\n`,
          );
          return;
        }
        process.stdout.write(
          `${opts.name}: ${(result.report.final.accuracy * 100).toFixed(1)} % held-out accuracy, ${result.report.convergence}${result.report.alerts.length ? ` (${result.report.alerts.length} warning${result.report.alerts.length > 1 ? 's' : ''} above)` : ''}; model ${result.manifest.sha256.slice(0, 12)} in ${resolve(opts.out ?? join(defaultWeightsDir(), opts.name))}\n`,
        );
      } finally {
        conn?.close();
      }
    });
}

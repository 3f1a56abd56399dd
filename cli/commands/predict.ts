import type { Command } from 'commander';
import { classifyFiles } from '../../inference/classify-files.ts';
import { createEngine, DEFAULT_ENGINE, ENGINE_NAMES } from '../../inference/engines.ts';
import { parseNumber } from '../format.ts';
import { checkReadableFiles } from '../local-files.ts';

interface PredictOptions {
  variant?: string;
  weights: string;
  topK: number;
  json?: boolean;
  engine: string;
  batchSize: number;
  backend?: string;
}

export function registerPredictCommand(program: Command): void {
  program
    .command('predict')
    .description(
      'classify local images (a path that cannot be read stops it first; exit status 1 if any image failed to decode, the others are still reported)',
    )
    .argument('<images...>', 'image files')
    .requiredOption('--weights <dir>', 'weights artifact directory')
    .option('--variant <variant>', 'expected variant of the weights (checked)')
    .option('--top-k <k>', 'classes per image', parseNumber('--top-k', 1, 1000, true), 5)
    .option('--engine <engine>', `inference engine: ${ENGINE_NAMES.join(' | ')}`, DEFAULT_ENGINE)
    .option('--backend <backend>', 'tfjs engine backend: tensorflow-gpu | tensorflow | wasm | cpu (env EFFITAG_TFJS_BACKEND)')
    .option('--batch-size <n>', 'images per inference call', parseNumber('--batch-size', 1, 256, true), 8)
    .option('--json', 'print a JSON array, one object per image')
    .action(async (images: string[], opts: PredictOptions) => {
      // The files first, as `tag` does: a mistyped path is one line naming it, before the model loads.
      await checkReadableFiles(images);
      const engine = createEngine(opts.engine, { tfjsBackend: opts.backend });
      const model = await engine.load(opts.weights, { variant: opts.variant });
      try {
        const results = await classifyFiles(model, images, { topK: opts.topK, batchSize: opts.batchSize });
        if (opts.json) {
          process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
        } else {
          for (const r of results) {
            if ('error' in r) {
              process.stdout.write(`${r.image}: error: ${r.error}\n`);
              continue;
            }
            process.stdout.write(`${r.image} (${r.variant}):\n`);
            for (const p of r.top) process.stdout.write(`  ${(p.probability * 100).toFixed(2).padStart(6)}%  ${p.index}  ${p.label}\n`);
          }
        }
        if (results.some((r) => 'error' in r)) process.exitCode = 1;
      } finally {
        await model.dispose();
      }
    });
}

import { Command } from 'commander';
import { registerModelCommands } from './commands/model.ts';
import { registerWeightsCommands } from './commands/weights.ts';
import { registerPredictCommand } from './commands/predict.ts';
import { registerTiersCommands } from './commands/tiers.ts';
import { registerLocalCommands } from './commands/local.ts';
import { registerBackfillCommand } from './commands/backfill.ts';
import { registerDlqCommands } from './commands/dlq.ts';
import { registerSearchCommand } from './commands/search.ts';
import { registerDupesCommand } from './commands/dupes.ts';
import { registerSimilarCommand } from './commands/similar.ts';
import { registerGalleryCommand } from './commands/gallery.ts';
import { registerTrainCommand } from './commands/train.ts';
import { registerPreflightCommand } from './commands/preflight.ts';
import { addStackOptions } from './stack.ts';

export function buildProgram(): Command {
  const program = new Command('effitag')
    .description('EfficientNet image tagging for S3: model library, CPU/GPU engines, tiers, pipeline and stack')
    .version('0.1.0')
    .showHelpAfterError()
    .configureOutput({ outputError: (str, write) => write(str) });
  // Which stack: named once, for every command (cli/stack.ts).
  addStackOptions(program);
  registerModelCommands(program);
  registerWeightsCommands(program);
  registerPredictCommand(program);
  registerTiersCommands(program);
  registerLocalCommands(program);
  registerBackfillCommand(program);
  registerDlqCommands(program);
  registerSearchCommand(program);
  registerDupesCommand(program);
  registerSimilarCommand(program);
  registerGalleryCommand(program);
  registerTrainCommand(program);
  registerPreflightCommand(program);
  return program;
}

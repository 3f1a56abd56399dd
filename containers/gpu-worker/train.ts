/**
 * `effitag train` inside the GPU image (`node train.mjs …`, the same flags as the CLI's): training
 * runs on tfjs-node-gpu there (the image sets EFFITAG_TFJS_BACKEND=tensorflow-gpu, so a GPU that does
 * not load is an error, not a silent CPU run). For example, as a one-off ECS task:
 *   node train.mjs --stack EffiTag --data s3://bucket/labelled/ --name products --base b0 --weights /var/effitag/weights/b0
 * (s3:// data is read with the stack `--stack` names, as `effitag --stack NAME train` reads it: its
 * outputs through CloudFormation DescribeStacks, so the task's role needs that read.)
 */
import { messageOf } from '../../base/errors.ts';
import { Command } from 'commander';
import { registerTrainCommand } from '../../cli/commands/train.ts';
import { addStackOptions } from '../../cli/stack.ts';

const program = new Command('train.mjs');
addStackOptions(program);
registerTrainCommand(program);
// `node train.mjs --data …` reads as `effitag train --data …`.
program.parseAsync([process.argv[0], process.argv[1], 'train', ...process.argv.slice(2)]).catch((err: unknown) => {
  process.stderr.write(`train: ${messageOf(err)}\n`);
  process.exit(1);
});

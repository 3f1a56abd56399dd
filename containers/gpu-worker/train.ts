/**
 * `effitag train` inside the GPU image (`node train.mjs …`, the same flags as the CLI's): training
 * runs on tfjs-node-gpu there (the image sets EFFITAG_TFJS_BACKEND=tensorflow-gpu, so a GPU that does
 * not load is an error, not a silent CPU run). For example, as a one-off ECS task:
 *   node train.mjs --data s3://bucket/labelled/ --name products --base b0 --weights /var/effitag/weights/b0
 * s3:// data is read from the task's own stack, the one its environment describes (the runtime
 * contract the worker reads): no stack name and no CloudFormation read. The worker's role reads
 * objects but may not list buckets (least privilege), so a training task's role also needs
 * s3:ListBucket on the data prefix. `--stack NAME` still names another stack (then the role needs
 * cloudformation:DescribeStacks on it).
 */
import { messageOf } from '../../base/errors.ts';
import { Command } from 'commander';
import { registerTrainCommand } from '../../cli/commands/train.ts';
import { addStackOptions } from '../../cli/stack.ts';

const program = new Command('train.mjs');
addStackOptions(program, { inTask: true });
registerTrainCommand(program);
// `node train.mjs --data …` reads as `effitag train --data …`.
program.parseAsync([process.argv[0], process.argv[1], 'train', ...process.argv.slice(2)]).catch((err: unknown) => {
  process.stderr.write(`train: ${messageOf(err)}\n`);
  process.exit(1);
});

/** CDK app entry: configuration from context, one stack, cdk-nag checks. No logic lives here. */
import { App, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { configFromContext } from './config.ts';
import { EffiTagStack } from './effitag-stack.ts';
import { applyNagAcknowledgements } from './nag.ts';

const app = new App();
const config = configFromContext(app.node);
// Environment-agnostic unless a lookup needs the account and region (effitag:vpcId): the template
// names no region (${AWS::Region}, resolved by CloudFormation) and `cdk deploy` deploys it where the
// CLI's credentials point (--profile's region, AWS_REGION). The CLI's CDK_DEFAULT_REGION falls back
// to us-east-1 when nothing is configured, which baked us-east-1 into image URIs and ARNs.
const env = config.vpcId ? { account: process.env.CDK_DEFAULT_ACCOUNT, region: process.env.CDK_DEFAULT_REGION } : undefined;
const stack = new EffiTagStack(app, app.node.tryGetContext('effitag:stackName') ?? 'EffiTag', {
  config,
  env,
  description: 'EffiTag: EfficientNet tags for S3 uploads, written back as object metadata',
});
applyNagAcknowledgements(stack);
Validations.of(app).addPlugins(new AwsSolutionsChecks(app, { verbose: true }));

/**
 * The fix for the AWS SDK's set-up errors, which name neither what is missing nor how to give it
 * ("Region is missing", "Could not load credentials from any providers"): the CLI appends it to the
 * one line it prints. Other errors get no hint.
 */
export function awsHint(err: unknown, env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (!(err instanceof Error)) return undefined;
  // --region is the program's (cli/stack.ts), on every command.
  if (err.message === 'Region is missing')
    return 'no AWS region: pass --region (effitag --region eu-west-1 …), or set AWS_REGION (or a region in your AWS profile)';
  if (err.name === 'CredentialsProviderError' || /^Could not load credentials from any providers/.test(err.message))
    // A profile was named (--profile sets AWS_PROFILE): "set AWS_PROFILE" would send the user in a circle.
    return env.AWS_PROFILE
      ? `no AWS credentials for profile ${env.AWS_PROFILE}: is it in ~/.aws/config or ~/.aws/credentials (aws configure --profile ${env.AWS_PROFILE}), or its SSO session expired (aws sso login --profile ${env.AWS_PROFILE})?`
      : 'no AWS credentials: set AWS_PROFILE (after `aws configure` or `aws sso login`), or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY';
  return undefined;
}

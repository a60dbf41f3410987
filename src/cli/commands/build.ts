import type { CommandContext } from '../context.ts';
import { firnError } from '../../errors.ts';

export function run(_ctx: CommandContext): Promise<number> {
  return Promise.reject(firnError('FIRN_E_USAGE', 'firn build is not implemented yet'));
}

// Who did it, as a person reads it (revision badges, the worklist): audit actors `ui:<role>[:<name>]`, `api:token`.
import { t } from './common.js';

/** An audit actor as a person reads it: `ui:surgeon:Dr Li` -> "Dr Li (Surgeon)", `ui:engineer` -> "Modelling
 * engineer", `api:token` -> "service API". */
export function actorName(actor) {
  const parts = String(actor || '').split(':');
  if (parts[0] !== 'ui' || parts.length < 2) return t('case_rev.actor_api');
  const role = t(`role.${parts[1]}`);
  return parts.length > 2 ? `${parts.slice(2).join(':')} (${role})` : role;
}

// What the dashboard puts on the screen: the banner, people's faces, who is looking at a team,
// the incident cards and the activity feed. No state of its own, no requests.

const STATUS = { open: 'Open', acknowledged: 'Acknowledged', resolved: 'Resolved' }
const FACES = ['#2563eb', '#7c3aed', '#db2777', '#0d9488', '#ea580c', '#4f46e5', '#0891b2']
/** Notes shown on a card, the latest; the rest behind "Show all". */
const NOTES_SHOWN = 3

export const $ = (selector, root = document) => root.querySelector(selector)

/**
 * The one banner, for the most important problem: offline, then missed updates (with Reload),
 * then a failed action (with Dismiss).
 */
export function renderBanner (problems) {
  let kind = ''
  let text = ''
  let label = ''
  if (problems.offline !== null) {
    kind = 'offline'
    text = problems.offline
  } else if (problems.resync) {
    kind = 'resync'
    text = 'Some updates could not be replayed after the connection came back: the list may be out of date.'
    label = 'Reload'
  } else if (problems.error !== null) {
    kind = 'error'
    text = problems.error
    label = 'Dismiss'
  }
  const banner = $('#banner')
  banner.hidden = kind === ''
  banner.dataset.kind = kind
  $('#banner-text').textContent = text
  const action = $('#banner-action')
  action.hidden = label === ''
  action.textContent = label
}

/** A face: the first letter of the name, in a colour of the user's own. */
export function avatar (user, you = false) {
  const span = document.createElement('span')
  span.className = you ? 'avatar you' : 'avatar'
  const name = user.name ?? String(user.id)
  span.textContent = name.slice(0, 1).toUpperCase()
  span.title = you ? `${name} (you)` : name
  span.dataset.userId = String(user.id)
  let hash = 0
  for (const char of String(user.id)) hash = (hash * 31 + char.charCodeAt(0)) >>> 0
  span.style.setProperty('--face', FACES[hash % FACES.length])
  return span
}

export function ago (ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000))
  if (s < 45) return 'just now'
  if (s < 3600) return `${Math.round(s / 60)} min ago`
  if (s < 86_400) return `${Math.round(s / 3600)} h ago`
  return new Date(ms).toLocaleDateString()
}

/** The sign-in list of demo users. */
export function renderPeople (users) {
  $('#people').replaceChildren(...users.map((user) => {
    const link = document.createElement('a')
    link.href = `/?user=${encodeURIComponent(user.id)}`
    link.dataset.testid = `sign-in-${user.id}`
    const text = document.createElement('span')
    const name = document.createElement('strong')
    name.textContent = user.name
    const role = document.createElement('small')
    role.textContent = user.role === 'admin' ? 'Admin · sees every team' : user.teams.length > 0 ? `Member · ${user.teams.join(', ')}` : 'Member · on no team'
    text.append(name, role)
    link.append(avatar(user), text)
    const li = document.createElement('li')
    li.append(link)
    return li
  }))
}

/** A team's section, from its template. */
export function teamElement (team) {
  const element = $('#team-template').content.firstElementChild.cloneNode(true)
  element.dataset.team = team.id
  element.dataset.testid = `team-${team.id}`
  $('.team-name', element).textContent = team.name
  return element
}

/** Who is looking at a team: faces, and a line of words. */
export function renderViewers (section, presence, userId) {
  const viewers = $('.viewers', section)
  $('.faces', viewers).replaceChildren(...presence.users.slice(0, 6).map((user) =>
    avatar({ id: user.userId, name: user.info.name }, user.userId === userId)))
  const others = presence.users.filter((user) => user.userId !== userId).map((user) => user.info.name)
  const unlisted = presence.count - presence.users.length
  let text
  if (others.length === 0 && unlisted === 0) text = 'Only you are here'
  else if (others.length <= 2 && unlisted === 0) text = `${others.join(' and ')} ${others.length === 1 ? 'is' : 'are'} here too`
  else text = `${presence.count} people here`
  $('.viewers-text', viewers).textContent = text
  viewers.dataset.count = String(presence.count)
}

/** An empty incident card, from its template. */
export function cardElement (incident) {
  const li = $('#incident-template').content.firstElementChild.cloneNode(true)
  li.dataset.incidentId = incident.id
  return li
}

/**
 * Fills a card in place, so a half-typed note or an open edit survives other people's changes.
 * `names(id)` gives a user's name; `teams` are the teams it may move to; `allNotes` whether every
 * note is shown.
 */
export function fillCard (li, incident, { names, teams, allNotes }) {
  li.dataset.status = incident.status
  li.dataset.severity = incident.severity
  $('[data-testid="severity"]', li).textContent = incident.severity.toUpperCase()
  $('[data-testid="title"]', li).textContent = incident.title
  const status = $('[data-testid="status"]', li)
  status.textContent = STATUS[incident.status]
  status.dataset.status = incident.status
  const parts = [`Declared ${ago(incident.createdAt)}`]
  if (incident.acknowledgedBy !== null) parts.push(`acknowledged by ${names(incident.acknowledgedBy)}`)
  if (incident.resolvedBy !== null) parts.push(`resolved by ${names(incident.resolvedBy)}`)
  $('[data-testid="meta"]', li).textContent = parts.join(' · ')

  const notes = $('.notes', li)
  notes.dataset.count = String(incident.notes.length)
  notes.replaceChildren(...incident.notes.slice(allNotes ? 0 : -NOTES_SHOWN).map((note) => {
    const item = document.createElement('li')
    const author = document.createElement('b')
    author.textContent = `${names(note.author)}: `
    item.append(author, note.text)
    return item
  }))
  const more = $('[data-action="notes"]', li)
  more.hidden = incident.notes.length <= NOTES_SHOWN
  more.textContent = allNotes ? 'Show the latest notes only' : `Show all ${incident.notes.length} notes`

  $('[data-action="acknowledge"]', li).hidden = incident.status !== 'open'
  $('[data-action="resolve"]', li).hidden = incident.status === 'resolved'
  const move = $('.move', li)
  const options = [['', 'Move to…'], ...teams.filter((team) => team.id !== incident.teamId).map((team) => [team.id, team.name])]
  if (move.options.length !== options.length || [...move.options].some((option, i) => option.value !== options[i][0])) {
    move.replaceChildren(...options.map(([value, label]) => {
      const option = document.createElement('option')
      option.value = value
      option.textContent = label
      return option
    }))
  }
}

/** Draws attention to a card that just changed. */
export function flash (li) {
  li.classList.remove('flash')
  window.requestAnimationFrame(() => li.classList.add('flash'))
}

/** One line of the activity feed, newest first; replayed ones say they came while offline. */
export function logActivity (meta, text) {
  const li = document.createElement('li')
  li.textContent = text
  const when = document.createElement('small')
  when.textContent = meta.replayed === true ? 'while you were offline' : new Date(meta.at).toLocaleTimeString()
  li.dataset.replayed = String(meta.replayed === true)
  li.append(when)
  const list = $('#activity')
  list.prepend(li)
  while (list.children.length > 40) list.lastElementChild.remove()
}

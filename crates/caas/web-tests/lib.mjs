// What the browser tests share: the chromium launch this machine needs,
// signing in through the form, screenshots, waiting on the terminal and on
// the page's message line. Env: CUBBY_URL; CAAS_WEB_SHOTS (a directory)
// for screenshots.
import { chromium } from 'playwright-core';
import path from 'node:path';

export const base = process.env.CUBBY_URL;
export const T = 60_000;
const shots = process.env.CAAS_WEB_SHOTS;

export function fail(msg) { throw new Error(msg); }

export async function shot(page, name, fullPage = false) {
  if (shots) await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage });
}

// Debian's chromium (no browser download) with the flags this machine
// needs (MACHINE-NOTES "Browser"); playwright gives every launch a fresh
// profile directory.
export function launch() {
  return chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

export async function signIn(ctx, user, password, viaKeyboard = false) {
  const page = await ctx.newPage();
  page.setDefaultTimeout(T);
  await page.goto(base + '/');
  await page.waitForSelector('#username');
  if (viaKeyboard) {
    // Keyboard only: the user name field has focus on arrival.
    await page.keyboard.type(user);
    await page.keyboard.press('Tab');
    await page.keyboard.type(password);
    await page.keyboard.press('Enter');
  } else {
    await page.fill('#username', user);
    await page.fill('#password', password);
    await page.click('button[type=submit]');
  }
  await page.waitForSelector('#whoami:has-text("' + user + '")');
  return page;
}

export async function termSees(page, text) {
  await page.waitForFunction((t) => {
    const rows = document.querySelector('.xterm-rows');
    return rows && rows.textContent.includes(t);
  }, text, { timeout: T });
}

// The page's message line (#flash) says `text`; on a timeout the error
// quotes what it says instead.
export async function flashSays(page, text) {
  try {
    await page.waitForSelector(`#flash:has-text(${JSON.stringify(text)})`, { timeout: 15_000 });
  } catch (e) {
    const now = await page.locator('#flash').textContent().catch(() => '?');
    fail(`the page did not say "${text}"; it says "${now}" at ${page.url()}`);
  }
}

// Drives the control plane's sign-in page in headless Chromium (Debian's
// /usr/bin/chromium through playwright-core) with JavaScript disabled:
// screenshots the page, submits a wrong password (expects the error shown),
// then the right one (expects the redirect to return_to with tokens in the
// fragment). Prints one JSON line with what it saw.
//
// Environment: SIGNIN_URL, RETURN_TO, USERNAME, PASSWORD, SHOT (png path),
// CHROMIUM (default /usr/bin/chromium).
import { chromium } from 'playwright-core';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is required`);
  return v;
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
try {
  const context = await browser.newContext({ javaScriptEnabled: false, viewport: { width: 640, height: 900 } });
  const page = await context.newPage();
  const blocked = [];
  page.on('console', (m) => blocked.push(m.text()));
  await page.goto(env('SIGNIN_URL'));
  const title = await page.title();
  const providers = await page.locator('a.provider').allTextContents();
  await page.screenshot({ path: env('SHOT'), fullPage: true });

  await page.fill('#password input[name=username]', env('USERNAME'));
  await page.fill('#password input[name=password]', 'definitely-wrong');
  await Promise.all([page.waitForLoadState('load'), page.click('#password button[type=submit]')]);
  const error = (await page.locator('.error').textContent({ timeout: 5000 }))?.trim();

  await page.fill('#password input[name=username]', env('USERNAME'));
  await page.fill('#password input[name=password]', env('PASSWORD'));
  const returnTo = env('RETURN_TO');
  await Promise.all([
    page.waitForURL((u) => u.toString().startsWith(returnTo), { timeout: 10000 }),
    page.click('#password button[type=submit]'),
  ]);
  console.log(JSON.stringify({ title, providers, error, final: page.url(), console: blocked }));
} finally {
  await browser.close();
}

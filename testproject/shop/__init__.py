"""The demo shop: a page whose session state (visits, cart, expiry) a visitor can watch change."""

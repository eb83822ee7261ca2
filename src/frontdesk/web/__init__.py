"""Presentation shared by all domains: the app factory, middleware, layout, static assets."""

"""Chappie core: config models, settings, column schema, paths, hashing, clock.

Imports only pydantic, numpy and the standard library, so that every other
package (and the fast `chappie --help`) can depend on it cheaply.
"""

"""What turns features and a request's moment into a final list, shared by every caller.

The gateway, `towerflow recommend`, the daily precompute and offline evaluation all go through
these modules, so what is served is what was evaluated:

- `context`: the request moment as model inputs (hour, weekday, day number);
- `binding`: a signature's inputs from user features, item features and the context;
- `rules`: the business rules after ranking;
- `twostage`: retrieval -> item features -> ranking -> rules over any model caller;
- `local`: that caller for SavedModels loaded in process.
"""
